"""Table 4 and Figure 6: CDS splits the dictionary into a large local and a small global group."""
import numpy as np
import pytest

from scopebench.plots import plot_cds_histogram


@pytest.mark.claim("table4.high-cds-minority")
def test_table4_cds_partition(workbench, backbone, sae_name, claim_report, plots_dir):
    cds = workbench.cds(backbone, sae_name)
    groups = workbench.partition(backbone, sae_name)
    scored = np.isfinite(cds.cds)
    assert scored.any(), f"no SAE feature of {sae_name} fired on the SCC overlap of {backbone}"
    assert np.all((cds.cds[scored] >= 0) & (cds.cds[scored] <= 1)), "CDS must lie in [0, 1]"
    assert groups.n_low + groups.n_high + groups.n_dead == len(cds.cds)
    values = {"dict_size": len(cds.cds), "gamma": groups.gamma, "n_low": groups.n_low, "n_high": groups.n_high,
              "n_dead_cds": groups.n_dead}
    claim_report.measure(backbone=backbone, sae=sae_name, table="table4", values=values,
                         definitions={"cds_k": cds.k, "cds_shift": cds.shift, "gamma": groups.gamma},
                         **workbench.sae_identity(backbone, sae_name))
    plot_cds_histogram(cds.cds[scored], groups.gamma, plots_dir / f"figure6-cds-{backbone}-{sae_name}.png",
                       title=f"CDS, {backbone} / {sae_name}")
    verdict = claim_report.check("table4.high-cds-minority", backbone=backbone, sae=sae_name,
                                 measured={"n_high": groups.n_high, "n_low": groups.n_low})
    claim_report.assert_held(verdict)
