"""Tables 7 and 9: outlier queries' attention moves under a context shift, other queries' does not."""
import pytest

from scopebench.results.plots import plot_attention_emd_vs_shift


def _attention(workbench, backbone, shifts):
    result = workbench.result("attention_emd", backbone, shifts=shifts)
    empty = [s for s, emd in result.output.per_shift.items() if emd.n_outlier == 0]
    if empty:
        pytest.fail(f"no outlier query above tau={result.output.tau:.3g} on {backbone} at s={empty}")
    return result


@pytest.mark.backbones("table7")
def test_table7_attention_emd(workbench, backbone, claim_report):
    claim_report.assert_held(*claim_report.record(_attention(workbench, backbone, (1,))))


@pytest.mark.backbones("table9")
def test_table9_attention_emd_every_shift(workbench, backbone, claim_report, plots_dir):
    result = _attention(workbench, backbone, None)
    shifts = sorted(result.output.per_shift)
    per_shift = result.output.per_shift
    plot_attention_emd_vs_shift(shifts, [per_shift[s].non_outlier for s in shifts],
                                [per_shift[s].outlier for s in shifts],
                                plots_dir / f"table9-attention-emd-{backbone}.png", title=backbone)
    claim_report.assert_held(*claim_report.record(result))
