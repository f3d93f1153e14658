"""Table 4 and Figure 6: CDS splits the dictionary into a large local and a small global group."""
import numpy as np
import pytest

from scopebench.results.plots import plot_cds_histogram


@pytest.mark.backbones("table4")
def test_table4_cds_partition(workbench, backbone, sae_name, claim_report, plots_dir):
    result = workbench.result("cds", backbone, sae_name)
    scores, groups = result.output.details
    scored = np.isfinite(scores.cds)
    assert scored.any(), f"no SAE feature of {sae_name} fired on the SCC overlap of {backbone}"
    assert np.all((scores.cds[scored] >= 0) & (scores.cds[scored] <= 1)), "CDS must lie in [0, 1]"
    assert groups.n_low + groups.n_high + groups.n_dead == len(scores.cds)
    plot_cds_histogram(scores.cds[scored], groups.gamma, plots_dir / f"figure6-cds-{backbone}-{sae_name}.png",
                       title=f"CDS, {backbone} / {sae_name}")
    claim_report.assert_held(*claim_report.record(result))
