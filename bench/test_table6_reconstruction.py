"""Table 6: SAE reconstruction quality on all tokens (A) and on outlier tokens (O)."""
import pytest


@pytest.mark.backbones("table6")
def test_table6_reconstruction(workbench, backbone, sae_name, claim_report):
    result = workbench.result("reconstruction", backbone, sae_name)
    if result.output.n_outlier == 0:
        pytest.fail(f"no outlier tokens above tau={result.output.tau:.3g} on {backbone}: "
                    "Table 6's outlier columns cannot be measured")
    claim_report.assert_held(*claim_report.record(result))
