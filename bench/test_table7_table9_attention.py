"""Tables 7 and 9: outlier queries' attention moves under a context shift, other queries' does not."""
import pytest

from scopebench.claims import indexed
from scopebench.plots import plot_attention_emd_vs_shift


def _measure(workbench, backbone, shifts):
    found = {}
    for s in shifts:
        result = workbench.attention_emd(backbone, s)
        if result.n_outlier == 0:
            pytest.fail(f"no outlier query above tau={result.tau:.3g} on {backbone} at s={s}")
        found[indexed("attn_emd_out", s)] = result.outlier
        found[indexed("attn_emd_non", s)] = result.non_outlier
    return found


@pytest.mark.claim("table7.outlier-attention-unstable")
def test_table7_attention_emd(workbench, backbone, claim_report):
    measured = _measure(workbench, backbone, [1])
    claim_report.measure(backbone=backbone, sae="-", table="table7", values=measured)
    verdict = claim_report.check("table7.outlier-attention-unstable", backbone=backbone, sae="-", measured=measured)
    claim_report.assert_held(verdict)


@pytest.mark.claim("table9.outlier-attention-unstable-every-shift")
def test_table9_attention_emd_every_shift(workbench, backbone, claim_report, plots_dir):
    shifts = list(workbench.scale(backbone).shifts)
    measured = _measure(workbench, backbone, shifts)
    claim_report.measure(backbone=backbone, sae="-", table="table9", values=measured)
    plot_attention_emd_vs_shift(shifts, [measured[indexed("attn_emd_non", s)] for s in shifts],
                                [measured[indexed("attn_emd_out", s)] for s in shifts],
                                plots_dir / f"table9-attention-emd-{backbone}.png", title=backbone)
    verdict = claim_report.check("table9.outlier-attention-unstable-every-shift", backbone=backbone, sae="-",
                                 measured=measured)
    claim_report.assert_held(verdict)
