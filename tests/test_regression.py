"""Regression mode: a run against a stored baseline passes when nothing moved and fails, readably, when it did."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scopebench.claims.registry import get_claim, margin_tolerance
from scopebench.cli.main import main
from scopebench.keys import indexed
from scopebench.results.leaderboard import load_results
from scopebench.results.regression import (
    REL_FLOOR, TOLERANCE_FACTOR, TOLERANCES_FILE, compare_dirs, spread_tolerances,
)

COMMITTED = Path(__file__).resolve().parents[1] / "leaderboard" / "results"


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    """The committed planted results as a baseline, with tolerances from a made-up second seed."""
    base = tmp_path / "base"
    shutil.copytree(COMMITTED, base)
    seed1 = tmp_path / "seed1"
    shutil.copytree(COMMITTED, seed1)
    _perturb(seed1 / "planted__batchtopk.json", "reconstruction", "fvu_a", 1.1)
    data = spread_tolerances([load_results(base), load_results(seed1)])
    (base / TOLERANCES_FILE).parent.mkdir()
    (base / TOLERANCES_FILE).write_text(json.dumps(data))
    return base


def _perturb(path: Path, analysis: str, quantity: str, factor: float) -> float:
    data = json.loads(path.read_text())
    data["analyses"][analysis]["output"][quantity] *= factor
    path.write_text(json.dumps(data))
    return data["analyses"][analysis]["output"][quantity]


def test_the_same_results_pass(baseline: Path, tmp_path: Path) -> None:
    passed, report = compare_dirs(load_results(COMMITTED), baseline)
    assert passed and report.endswith("regression: PASS") and "3 records compared" in report


def test_tolerances_are_a_few_times_the_seed_spread_with_a_float_floor(baseline: Path) -> None:
    quantities = json.loads((baseline / TOLERANCES_FILE).read_text())["quantities"]
    fvu = quantities["planted/batchtopk/reconstruction/fvu_a"]
    base_fvu = json.loads((COMMITTED / "planted__batchtopk.json").read_text())["analyses"]["reconstruction"]["output"]
    assert fvu["spread"] == pytest.approx(0.1 * base_fvu["fvu_a"])
    assert fvu["tolerance"] == pytest.approx(TOLERANCE_FACTOR * fvu["spread"])
    emd = quantities["planted/(backbone)/attention_emd/attn_emd_out[s=1]"]  # no seed moves it
    base_emd = json.loads((COMMITTED / "planted.json").read_text())["analyses"]["attention_emd"]["output"]
    assert emd["spread"] == 0 and emd["tolerance"] == pytest.approx(REL_FLOOR * base_emd["per_shift"]["1"]["outlier"])


def test_drift_beyond_tolerance_fails_with_a_readable_diff(baseline: Path, tmp_path: Path, capsys) -> None:
    now = tmp_path / "now"
    shutil.copytree(COMMITTED, now)
    _perturb(now / "planted__batchtopk.json", "reconstruction", "fvu_a", 1.1)  # within 3x the seed spread
    assert compare_dirs(load_results(now), baseline)[0]
    base_high = json.loads((now / "planted__batchtopk.json").read_text())["analyses"]["cds"]["output"]["n_high"]
    moved = _perturb(now / "planted__batchtopk.json", "cds", "n_high", 1.5)  # no seed moved it: beyond the floor
    passed, report = compare_dirs(load_results(now), baseline)
    # the high-CDS share, derived from n_high, moved too but is not a drift of its own
    assert not passed and "regression: FAIL (1 drifts)" in report and "high_share" not in report
    header, rule, row = [line for line in report.splitlines() if "n_high" in line or "quantity" in line
                         or line.startswith("---")][:3]
    assert header.split() == ["record", "quantity", "baseline", "now", "delta", "tolerance"]
    assert row.split()[:4] == ["planted/batchtopk", "cds/n_high", f"{base_high:g}", f"{moved:g}"]
    assert main(["compare", str(now), str(baseline)]) == 1 and "cds/n_high" in capsys.readouterr().out
    assert main(["compare", str(COMMITTED), str(baseline)]) == 0


def test_a_flipped_verdict_or_a_missing_baseline_fails(baseline: Path, tmp_path: Path) -> None:
    now = tmp_path / "now"
    shutil.copytree(COMMITTED, now)
    path = now / "planted__batchtopk.json"
    data = json.loads(path.read_text())
    data["claims"]["table4.high-cds-minority"]["passed"] = False
    path.write_text(json.dumps(data))
    passed, report = compare_dirs(load_results(now), baseline)
    assert not passed and "claim table4.high-cds-minority" in report and "flip" in report
    (baseline / "planted__topk.json").unlink()
    passed, report = compare_dirs(load_results(COMMITTED), baseline)
    assert not passed and "no baseline for planted/topk" in report and "--update-baseline" in report


def test_a_run_at_another_precision_is_not_compared_with_the_baseline(baseline: Path, tmp_path: Path) -> None:
    now = tmp_path / "now"
    shutil.copytree(COMMITTED, now)
    path = now / "planted__topk.json"
    data = json.loads(path.read_text())
    data["backbone"]["precision"] = "bf16"
    path.write_text(json.dumps(data))
    passed, report = compare_dirs(load_results(now), baseline)
    assert not passed and "2 records compared" in report
    assert "planted/topk (baseline made at precision fp32, this run bf16: pass the baseline's --precision)" in report


def test_quantities_and_config_fields_newer_than_the_baseline_are_not_drift(baseline: Path, tmp_path: Path) -> None:
    """A run that measures more than its baseline recorded (here the bootstrap intervals of the removal gains,
    with the bootstrap settings in its config) passes; the baseline's own quantities are still compared."""
    path = baseline / "planted__batchtopk.json"
    data = json.loads(path.read_text())
    probes = data["analyses"]["removal_probes"]
    assert "cls_gain_high_removed_lo" in probes["output"] and "bootstrap" in probes["config"]
    probes["output"] = {k: v for k, v in probes["output"].items() if "_gain_" not in k}
    del probes["config"]["bootstrap"]
    data["claims"] = {k: v for k, v in data["claims"].items() if "cls_gain_high_removed_lo" not in v["measured"]}
    path.write_text(json.dumps(data))  # a baseline from before the intervals were measured
    now = tmp_path / "now"
    shutil.copytree(COMMITTED, now)
    passed, report = compare_dirs(load_results(now), baseline)
    assert passed, report
    _perturb(now / "planted__batchtopk.json", "removal_probes", "cls_top1_original", 1.5)
    assert not compare_dirs(load_results(now), baseline)[0]

def test_a_verdict_the_seeds_disagree_on_may_flip_and_any_other_may_not(tmp_path: Path) -> None:
    """The tolerance runs list the verdicts they disagree on; only those may flip against the baseline."""
    base, seed1 = tmp_path / "base", tmp_path / "seed1"
    shutil.copytree(COMMITTED, base)
    shutil.copytree(COMMITTED, seed1)
    claims = json.loads((base / "planted__batchtopk.json").read_text())["claims"]
    shaky, steady = sorted(c for c, v in claims.items() if v["passed"])[:2]

    def flip(folder: Path, claim: str) -> None:
        path = folder / "planted__batchtopk.json"
        data = json.loads(path.read_text())
        data["claims"][claim]["passed"] = False
        path.write_text(json.dumps(data))
    flip(seed1, shaky)
    data = spread_tolerances([load_results(base), load_results(seed1)])
    # the one the seeds disagree on, beside any held by less than its quantities' tolerances (TopK's 30 = 30)
    assert f"planted/batchtopk/{shaky}" in data["unstable_verdicts"]
    assert f"planted/batchtopk/{steady}" not in data["unstable_verdicts"]
    (base / TOLERANCES_FILE).parent.mkdir()
    (base / TOLERANCES_FILE).write_text(json.dumps(data))
    assert compare_dirs(load_results(seed1), base)[0]  # the shaky verdict flipped: within the seeds' spread
    flip(seed1, steady)
    passed, report = compare_dirs(load_results(seed1), base)
    assert not passed and f"claim {steady}" in report and f"claim {shaky}" not in report


def test_an_earlier_tolerances_file_keeps_its_larger_tolerances_and_unstable_verdicts(
        baseline: Path, tmp_path: Path, capsys) -> None:
    """A baseline re-measured on one machine keeps the spread an earlier file measured on another CPU."""
    earlier = json.loads((baseline / TOLERANCES_FILE).read_text())
    wide, narrow = "planted/batchtopk/reconstruction/fvu_a", "planted/batchtopk/reconstruction/fvu_o"
    earlier["quantities"][narrow]["tolerance"] = 0.0  # smaller than anything measured: replaced
    claim = next(iter(json.loads((COMMITTED / "planted__batchtopk.json").read_text())["claims"]))
    earlier["unstable_verdicts"] = [f"planted/batchtopk/{claim}", "planted/gone/some.claim"]
    keep = tmp_path / "earlier.json"
    keep.write_text(json.dumps(earlier))
    seed1 = tmp_path / "again"
    shutil.copytree(COMMITTED, seed1)  # no spread at all between the new runs
    out = tmp_path / "tolerances.json"
    assert main(["tolerances", str(baseline), str(seed1), "--out", str(out), "--keep", str(keep)]) == 0
    data = json.loads(out.read_text())
    assert data["quantities"][wide] == {**earlier["quantities"][wide], "kept_from_earlier": True}
    assert data["quantities"][narrow]["spread"] == 0 and "kept_from_earlier" not in data["quantities"][narrow]
    assert f"planted/batchtopk/{claim}" in data["unstable_verdicts"]
    assert "planted/gone/some.claim" not in data["unstable_verdicts"]  # a record no run has is not carried over
    assert data["earlier_seeds"] == earlier["seeds"] and "kept_from_earlier" in data["method"]
    keep.write_text("[1, 2]")
    assert main(["tolerances", str(baseline), str(seed1), "--out", str(out), "--keep", str(keep)]) == 2
    assert "not a tolerances file" in capsys.readouterr().err


def test_margin_tolerance_adds_the_compared_quantities_tolerances() -> None:
    """``a >= f x b`` moves by tol(a) + f tol(b); an indexed relation by its widest comparison; a monotone one by
    two neighbours' tolerances."""
    close = get_claim("table8.seg-high-removal-close")  # seg_miou_high_removed >= 0.95 x seg_miou_original
    measured = {"seg_miou_high_removed": 40.0, "seg_miou_original": 44.0}
    tolerances = {"seg_miou_high_removed": 1.0, "seg_miou_original": 2.0}
    assert margin_tolerance(close, measured, tolerances.__getitem__) == pytest.approx(1.0 + 0.95 * 2.0)
    every = get_claim("table9.outlier-attention-unstable-every-shift")  # out > non at every s
    emd = {indexed(name, s): 1.0 for name in ("attn_emd_out", "attn_emd_non") for s in (1, 2)}
    tol = {indexed("attn_emd_out", 1): 0.1, indexed("attn_emd_non", 1): 0.2, indexed("attn_emd_out", 2): 0.5,
           indexed("attn_emd_non", 2): 0.0}
    assert margin_tolerance(every, emd, tol.__getitem__) == pytest.approx(0.5)
    rises = get_claim("table9.non-outlier-emd-rises-with-shift")  # non-decreasing in s
    assert margin_tolerance(rises, emd, tol.__getitem__) == pytest.approx(0.2 + 0.0)


def test_a_verdict_held_by_less_than_its_quantities_tolerance_may_flip(tmp_path: Path) -> None:
    """A seed spread larger than a verdict's margin makes the verdict unstable (drift within tolerance could flip
    it); a verdict held by more than its quantities' tolerances still may not flip."""
    base, seed1 = tmp_path / "base", tmp_path / "seed1"
    shutil.copytree(COMMITTED, base)
    shutil.copytree(COMMITTED, seed1)
    claims = json.loads((base / "planted__batchtopk.json").read_text())["claims"]
    close, far = claims["table8.seg-high-removal-close"], claims["table8.seg-low-removal-clearly-below"]
    assert close["passed"] and far["passed"]
    spread = close["margin"] / TOLERANCE_FACTOR * 1.5  # its tolerance: 1.5 x the margin
    assert spread * TOLERANCE_FACTOR < far["margin"]
    moved = _perturb(seed1 / "planted__batchtopk.json", "removal_probes", "seg_miou_high_removed",
                     1 + spread / close["measured"]["seg_miou_high_removed"])
    assert moved == pytest.approx(close["measured"]["seg_miou_high_removed"] + spread)
    data = spread_tolerances([load_results(base), load_results(seed1)])
    assert "planted/batchtopk/table8.seg-high-removal-close" in data["unstable_verdicts"]
    assert "planted/batchtopk/table8.seg-low-removal-clearly-below" not in data["unstable_verdicts"]
    assert "margin" in data["method"]
