"""Table 6: SAE reconstruction quality on all tokens (A) and on outlier tokens (O)."""
import math

import pytest

from scopebench.backbones import get_spec

FVU_DEFINITION = ("FVU_T = sum_t ||x_t - xhat_t||^2 / sum_t ||x_t - mu_T||^2, mu_T the per-dimension mean "
                  "over token set T (A = all patch tokens, O = tokens with norm > tau)")


@pytest.mark.claim("table6.outliers-reconstructed-better")
def test_table6_reconstruction(workbench, backbone, sae_name, claim_report):
    metrics = workbench.reconstruction(backbone, sae_name)
    if metrics.n_outlier == 0:
        pytest.fail(f"no outlier tokens above tau={workbench.tau(backbone):.3g} on {backbone}: "
                    "Table 6's outlier columns cannot be measured")
    values = {"fvu_a": metrics.fvu_all, "fvu_o": metrics.fvu_outlier, "l0_a": metrics.l0_all,
              "l0_o": metrics.l0_outlier, "cs_a": metrics.cos_all, "cs_o": metrics.cos_outlier,
              "dead_pct": 100.0 * metrics.dead_fraction, "dict_size": workbench.sae(backbone, sae_name).d_sae}
    data = workbench.dataset(backbone, "eval")
    claim_report.measure(backbone=backbone, sae=sae_name, table="table6", values=values,
                         dataset={"name": data.identity.split(":", 1)[0], "identity": data.identity,
                                  "n_images": len(data), "n_tokens": metrics.n_all},
                         definitions={"fvu_normalisation": FVU_DEFINITION, "tau": get_spec(backbone).tau,
                                      "tau_value": workbench.tau(backbone)},
                         **workbench.sae_identity(backbone, sae_name),
                         weights_id=workbench.backbone(backbone).weights_id, device=str(workbench.device))
    assert all(math.isfinite(v) for v in values.values()), values
    fvu = claim_report.check("table6.outliers-reconstructed-better", backbone=backbone, sae=sae_name,
                             measured={"fvu_o": values["fvu_o"], "fvu_a": values["fvu_a"]})
    cos = claim_report.check("table6.outliers-cosine-higher", backbone=backbone, sae=sae_name,
                             measured={"cs_o": values["cs_o"], "cs_a": values["cs_a"]})
    claim_report.assert_held(fvu, cos)
