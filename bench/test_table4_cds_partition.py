"""Table 4 and Figure 6: CDS splits the dictionary into a large local and a small, separate global group."""
import numpy as np
import pytest

from scopebench.results.plots import plot_cds_histograms


@pytest.mark.backbones("table4", "figure6")
def test_table4_cds_partition(workbench, backbone, sae_name, claim_report, plots_dir):
    result = workbench.result("cds", backbone, sae_name)
    scores, groups = result.output.details
    scored = np.isfinite(scores.cds)
    assert scored.any(), f"no SAE feature of {sae_name} fired on the SCC overlap of {backbone}"
    assert np.all((scores.cds[scored] >= 0) & (scores.cds[scored] <= 1)), "CDS must lie in [0, 1]"
    if groups is not None:
        assert groups.n_low + groups.n_high + groups.n_dead == len(scores.cds)
    else:  # no valley: the Table 4 numbers are NaN and its claim is recorded as not held, with the reason
        assert result.output.no_partition and np.isnan(result.output.n_high)
    histogram = result.output.histogram
    assert sum(histogram.counts) == scored.sum(), "the stored Figure 6 histogram counts every scored feature"
    plot_cds_histograms({sae_name: (histogram.edges, histogram.counts)}, {sae_name: result.output.gamma},
                        plots_dir / f"figure6-cds-{backbone}-{sae_name}.png", title=f"CDS, {backbone} / {sae_name}")
    claim_report.assert_held(*claim_report.record(result))
