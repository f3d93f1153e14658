"""Figure 7: activation-weighted CDS rises at the top of the token-norm spectrum."""
import math

import pandas as pd
import pytest

from scopebench.results.plots import plot_awcds_by_norm


@pytest.mark.backbones("figure7")
def test_figure7_awcds_by_norm(workbench, backbone, sae_name, claim_report, plots_dir):
    result = workbench.result("awcds", backbone, sae_name)
    assert all(math.isfinite(v) for v in result.output.quantities().values()), result.output.details
    curve = pd.DataFrame([row.model_dump() for row in result.output.curve])
    shared = result.output.details.columns.intersection(curve.columns)
    pd.testing.assert_frame_equal(curve[shared], result.output.details[shared], check_dtype=False)  # as computed
    plot_awcds_by_norm({sae_name: curve}, plots_dir / f"figure7-awcds-{backbone}-{sae_name}.png",
                       title=f"awCDS, {backbone} / {sae_name}")
    claim_report.assert_held(*claim_report.record(result))
