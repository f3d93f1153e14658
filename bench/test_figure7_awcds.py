"""Figure 7: activation-weighted CDS rises at the top of the token-norm spectrum."""
import numpy as np
import pytest

from scopebench.plots import plot_awcds_by_norm


@pytest.mark.claim("figure7.awcds-peaks-at-high-norm")
def test_figure7_awcds_by_norm(workbench, backbone, sae_name, claim_report, plots_dir):
    table = workbench.awcds_table(backbone, sae_name)
    bins = table[~table["is_top"]]
    # the top norm bin is the top-1% row (outliers are ~1-3% of tokens); the median bin holds the 50th percentile
    top = float(table.loc[table["is_top"], "mean_awcds"].iloc[0])
    median = float(bins.loc[(bins["pct_lo"] <= 50) & (bins["pct_hi"] > 50), "mean_awcds"].iloc[0])
    assert np.isfinite(top) and np.isfinite(median), table
    measured = {"awcds_top_bin": top, "awcds_median_bin": median}
    claim_report.measure(backbone=backbone, sae=sae_name, table="figure7", values=measured,
                         **workbench.sae_identity(backbone, sae_name))
    plot_awcds_by_norm(table, plots_dir / f"figure7-awcds-{backbone}-{sae_name}.png",
                       title=f"awCDS, {backbone} / {sae_name}")
    verdict = claim_report.check("figure7.awcds-peaks-at-high-norm", backbone=backbone, sae=sae_name,
                                 measured=measured)
    claim_report.assert_held(verdict)
