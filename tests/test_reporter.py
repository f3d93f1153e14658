"""The pytest reporter, exercised on a tiny fake bench module run by ``pytester``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HELPER = '''
import math

import pytest

from scopebench.analyses import AttentionEMDOutput, ReconstructionOutput
from scopebench.analyses.attention_emd.output import ShiftEMD
from scopebench.results.records import AnalysisRecord, AnalysisResult, BackboneInfo, DatasetInfo, SAEInfo, output_json

SAE = "topk"


def result(analysis, backbone, output, sae=SAE):
    """What Workbench.result returns, built by hand."""
    sae_info = None if sae is None else SAEInfo(name=sae, config={"k": 8}, checkpoint_sha256="feed")
    record = AnalysisRecord(config={"images": 4}, output=output_json(output),
                            dataset=DatasetInfo(name="scenes", identity="scenes:seed=3", n_images=4, n_tokens=64))
    return AnalysisResult(analysis=analysis, backbone=BackboneInfo(name=backbone), sae=sae_info, record=record,
                          output=output, device="cpu")


def recon(backbone, sae=SAE, **values):
    return result("reconstruction", backbone, ReconstructionOutput(**values), sae)
'''

FAKE_BENCH = HELPER + '''

def test_table6(claim_report):
    verdicts = claim_report.record(recon("dinov2-b", fvu_a=0.05, fvu_o=0.002, l0_o=math.nan, tau=100.0))
    claim_report.assert_held(*verdicts)

def test_table7_fails(claim_report):
    emd = AttentionEMDOutput(per_shift={1: ShiftEMD(outlier=0.4, non_outlier=0.6, n_outlier=3, n_non_outlier=9)},
                             tau=100.0)
    claim_report.assert_held(*claim_report.record(result("attention_emd", "dinov2-b", emd, sae=None)))

def test_two_claims_one_fails(claim_report):
    verdicts = claim_report.record(recon("siglip2-b", fvu_o=0.001, fvu_a=0.05, cs_o=0.5, cs_a=0.9))
    claim_report.assert_held(*verdicts)

def test_crashes_before_recording(claim_report):
    raise RuntimeError("backbone exploded")

def test_no_weights(claim_report):
    pytest.skip("no weights for dinov2-b: pass --weights dinov2-b=PATH")

def test_not_a_bench_case():
    assert True
'''


def _setup(pytester: pytest.Pytester) -> None:
    """No conftest: the plugin loads by its pytest11 entry point, as in a project that installed scopebench.
    The fake bench's SAE is the one under test, so its claims are asserted (verify mode)."""
    pytester.makepyfile(test_fake_bench=FAKE_BENCH)
    pytester.makeini("[pytest]\naddopts = --paper-sae topk\n")


def _row(lines: list[str], case: str) -> str:
    matches = [line for line in lines if line.startswith(case + " ")]
    assert len(matches) >= 1, f"no row for {case}"
    return matches[-1]


def test_session_prints_rows_and_writes_results(pytester: pytest.Pytester) -> None:
    _setup(pytester)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=3, skipped=1)
    lines = result.outlines
    header = next(i for i, line in enumerate(lines) if "scopebench claims" in line)
    table = lines[header + 1:next(i for i, line in enumerate(lines) if line.startswith("FAIL test_"))]
    assert table[0].split() == ["verdict", "claim", "backbone", "SAE", "margin", "measured", "(paper)"]
    assert max(len(line) for line in table) <= 120

    def row(claim: str, backbone: str) -> str:
        (found,) = [line for line in table if f" {claim} " in f" {line} " and f" {backbone} " in line]
        return found

    passing = row("table6.outliers-reconstructed-better", "dinov2-b")
    assert passing.startswith("PASS") and "fvu_o=0.002 (0.001) fvu_a=0.05 (0.039)" in passing  # paper: Table 6
    assert " +0.048 " in passing  # margin: fvu_a - fvu_o
    failing = row("table7.outlier-attention-unstable", "dinov2-b")
    # the margin (0.4 - 0.6), then the values as far as 120 columns allow (the result file has them all)
    assert failing.startswith("FAIL") and " -0.2    attn_emd_out[s=1]=0.4 (6.96) attn_emd_non[s=1" in failing
    assert row("test_crashes_before_recording", "-").startswith("FAIL")
    siblings = [line for line in table if " siglip2-b " in line]
    assert [line.split()[1] for line in siblings] == ["table6.outliers-reconstructed-better",
                                                      "table6.outliers-cosine-higher"]
    assert [line.split()[0] for line in siblings] == ["PASS", "FAIL"]
    assert row("test_no_weights", "-").startswith("SKIP")
    assert not any("test_not_a_bench_case" in line for line in table)
    result.stdout.fnmatch_lines(["*FAIL*test_crashes_before_recording*RuntimeError: backbone exploded*"])

    path = pytester.path / "leaderboard" / "results" / "dinov2-b__topk.json"
    data = json.loads(path.read_text())
    recon = data["analyses"]["reconstruction"]
    assert (recon["output"]["fvu_a"], recon["output"]["fvu_o"], recon["output"]["l0_o"]) == (0.05, 0.002, None)
    assert recon["config"] == {"images": 4} and recon["dataset"]["n_tokens"] == 64 and recon["output"]["tau"] == 100.0
    assert data["claims"]["table6.outliers-reconstructed-better"]["passed"] is True
    assert data["claims"]["table6.outliers-reconstructed-better"]["margin"] == pytest.approx(0.05 - 0.002)
    assert data["sae"] == {"name": "topk", "config": {"k": 8}, "checkpoint_sha256": "feed", "training": None}
    backbone = json.loads((path.parent / "dinov2-b.json").read_text())  # attention EMD needs no SAE
    assert backbone["sae"] is None and set(backbone["analyses"]) == {"attention_emd"}
    assert backbone["analyses"]["attention_emd"]["output"]["per_shift"]["1"]["outlier"] == 0.4
    assert backbone["claims"]["table7.outlier-attention-unstable"]["passed"] is False
    assert backbone["claims"]["table7.outlier-attention-unstable"]["margin"] == pytest.approx(0.4 - 0.6)
    assert backbone["claims"]["table7.outlier-attention-unstable"]["paper"] == {"attn_emd_non[s=1]": 0.61,
                                                                                 "attn_emd_out[s=1]": 6.96}
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == [
        "dinov2-b.json", path.name, "siglip2-b__topk.json"]

    board = lines[next(i for i, line in enumerate(lines) if "scopebench leaderboard" in line):]
    board_rows = [line for line in board if line.startswith("dinov2-b")]  # one line per block of columns
    assert board_rows[0].split()[:4] == ["dinov2-b", "topk", "0.05", "0.002"]
    cells = " ".join(board_rows).split()
    assert "1/1" in cells and "0.400" in cells and "0.600" in cells  # the backbone's EMD columns on its SAE row
    assert not any(line.startswith("dinov2-b ") and " - " in line for line in board)  # no fake SAE row


def test_later_run_merges_into_existing_file(pytester: pytest.Pytester) -> None:
    _setup(pytester)
    pytester.runpytest_inprocess("-p", "no:cacheprovider")
    path = pytester.path / "leaderboard" / "results" / "dinov2-b__topk.json"
    pytester.makepyfile(test_fake_bench=FAKE_BENCH.replace("0.05", "0.07"))
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "table6")
    pytester.makepyfile(test_fake_bench=FAKE_BENCH.replace("fvu_a=0.05, fvu_o=0.002, l0_o=math.nan",
                                                           "fvu_a=0.07, cs_a=0.9, cs_o=0.95"))
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "table6")
    output = json.loads(path.read_text())["analyses"]["reconstruction"]["output"]
    assert (output["fvu_a"], output["fvu_o"], output["cs_o"]) == (0.07, 0.002, 0.95)  # same config: merged
    assert set(json.loads(path.read_text())["claims"]) == {"table6.outliers-reconstructed-better",
                                                           "table6.outliers-cosine-higher"}


def test_results_dir_and_no_results_options(pytester: pytest.Pytester, tmp_path: Path) -> None:
    _setup(pytester)
    target = tmp_path / "elsewhere"
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "--results-dir", str(target))
    assert sorted(p.name for p in target.glob("*.json")) == ["dinov2-b.json", "dinov2-b__topk.json",
                                                             "siglip2-b__topk.json"]
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--no-results")
    assert any("scopebench claims" in line for line in result.outlines)
    assert not (pytester.path / "leaderboard").exists()


def test_session_without_bench_cases_prints_and_writes_nothing(pytester: pytest.Pytester) -> None:
    _setup(pytester)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "not_a_bench_case")
    result.assert_outcomes(passed=1)
    assert not any("scopebench" in line for line in result.outlines if not line.startswith("plugins:"))
    assert not (pytester.path / "leaderboard").exists()


def test_bad_existing_result_is_set_aside_and_this_runs_results_land(pytester: pytest.Pytester) -> None:
    _setup(pytester)
    results = pytester.path / "leaderboard" / "results"
    results.mkdir(parents=True)
    (results / "dinov2-b__topk.json").write_text("{not json")
    (results / "clip-b16__other.json").write_text('{"schema_version": 1}')  # unrelated and invalid
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*dinov2-b__topk.json*not valid JSON*moved it to dinov2-b__topk.json.corrupt-0*",
                                 "*left out of the leaderboard*clip-b16__other.json*"])
    assert (results / "dinov2-b__topk.json.corrupt-0").read_text() == "{not json"  # kept, never read again
    assert json.loads((results / "dinov2-b__topk.json").read_text())["sae"]["name"] == "topk"
    assert json.loads((results / "siglip2-b__topk.json").read_text())["sae"]["name"] == "topk"
    assert (results / "clip-b16__other.json").read_text() == '{"schema_version": 1}'
    board = result.outlines[next(i for i, line in enumerate(result.outlines) if "scopebench leaderboard" in line):]
    assert any(line.startswith("dinov2-b") for line in board) and any(line.startswith("siglip2-b") for line in board)


@pytest.mark.parametrize("flag", ["--results-dir", "--cache-dir", "--plots-dir"])
def test_a_folder_option_naming_a_file_stops_the_run_before_any_test(pytester: pytest.Pytester, flag: str) -> None:
    _setup(pytester)
    (pytester.path / "afile").write_text("x")
    for value in ("afile", "afile/sub"):
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider", flag, value)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*{flag} {value}:*file*give a folder*"])
        assert not (pytester.path / "leaderboard").exists()


def test_xdist_run_reports_claims_and_leaderboard_once(pytester: pytest.Pytester) -> None:
    """With -n 2 the cases run in workers; the controller prints one claims table, one leaderboard, and writes
    the results (they used to stay in the workers and be lost)."""
    pytest.importorskip("xdist")
    _setup(pytester)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    assert sum("scopebench claims" in line for line in result.outlines) == 1
    assert sum("scopebench leaderboard" in line for line in result.outlines) == 1
    table = result.outlines[next(i for i, line in enumerate(result.outlines) if "scopebench claims" in line):]
    assert sum(" siglip2-b " in line for line in table) == 2  # one line per claim
    assert any(line.startswith("SKIP") and "test_no_weights" in line for line in table)
    results = pytester.path / "leaderboard" / "results"
    assert set(json.loads((results / "dinov2-b__topk.json").read_text())["analyses"]) == {"reconstruction"}
    assert set(json.loads((results / "dinov2-b.json").read_text())["analyses"]) == {"attention_emd"}


def test_bad_calls_fail_the_case_with_a_clear_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(HELPER + '''
def test_sae_name_outside_the_rule(claim_report):
    claim_report.record(recon("planted", sae="my sae", fvu_a=0.1))

def test_backbone_name_outside_the_rule(claim_report):
    claim_report.record(recon("../up", fvu_a=0.1))
''')
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*SAE name 'my sae': the name contains ' '; names must be*"])
    result.stdout.fnmatch_lines(["*backbone name '../up': the name contains '/'*"])
    assert not (pytester.path / "leaderboard").exists()  # nothing was recorded, so nothing is written


MODES_BENCH = HELPER + '''
def _table6(claim_report, sae, fvu_o, cs_o):
    claim_report.assert_held(*claim_report.record(recon("planted", sae, fvu_o=fvu_o, fvu_a=0.001, cs_o=cs_o,
                                                        cs_a=0.98)))

def test_paper_sae_failure(claim_report):
    _table6(claim_report, "batchtopk", fvu_o=0.003, cs_o=0.99)

def test_other_sae_failure(claim_report):
    _table6(claim_report, "topk", fvu_o=0.003, cs_o=0.5)

def test_other_sae_holds(claim_report):
    _table6(claim_report, "topk-wide", fvu_o=0.0005, cs_o=0.99)
'''


def test_claims_are_asserted_for_the_sae_under_test_and_scored_for_every_other(pytester: pytest.Pytester) -> None:
    """Verify mode for --paper-sae (default: the paper's BatchTopK); leaderboard mode for the rest: their
    verdicts are recorded and shown, and the run passes (no per-SAE exemption list)."""
    pytester.makepyfile(test_modes=MODES_BENCH)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    start = next(i for i, line in enumerate(result.outlines) if "scopebench claims" in line) + 1
    table = result.outlines[start:next(i for i, line in enumerate(result.outlines) if line.startswith("FAIL test_"))]
    verdicts = {(line.split()[3], line.split()[0]) for line in table if "table6.outliers-reconstructed" in line}
    assert verdicts == {("batchtopk", "FAIL"), ("topk", "missed"), ("topk-wide", "held")}
    result.stdout.fnmatch_lines(["FAIL *test_paper_sae_failure*fvu_o=0.003*"])
    stored = json.loads((pytester.path / "leaderboard" / "results" / "planted__topk.json").read_text())["claims"]
    assert stored["table6.outliers-reconstructed-better"] == {**stored["table6.outliers-reconstructed-better"],
                                                             "passed": False, "asserted": False}
    stored_board = (pytester.path / "leaderboard" / "results").parent  # the terminal shortens long cells
    from scopebench.results.leaderboard import build_frame, load_results
    frame = build_frame(load_results(stored_board / "results")).set_index("SAE")
    assert frame.loc["topk", "claims"] == "0/2 (not: table6.outliers-cosine-higher, table6.outliers-reconstructed-better)"

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--no-results", "--paper-sae", "topk")
    result.assert_outcomes(passed=2, failed=1)  # now topk is under test: its failure fails, batchtopk's is scored
    result.stdout.fnmatch_lines(["FAIL *test_other_sae_failure*cs_o=0.5*"])


def test_every_terminal_line_of_the_claims_table_fits_120_columns(pytester: pytest.Pytester) -> None:
    _setup(pytester)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    start = next(i for i, line in enumerate(result.outlines) if "scopebench claims" in line)
    end = next(i for i, line in enumerate(result.outlines) if "scopebench leaderboard" in line)
    assert max(len(line) for line in result.outlines[start + 1:end] if not line.startswith("scopebench: wrote")) <= 120
    # The leaderboard section ends at pytest's next header; pytest's own summary is not ours to size
    # (it is not truncated at all when the CI variable is set).
    stop = next(i for i, line in enumerate(result.outlines) if i > end and line.startswith("="))
    assert stop > end + 3 and max(len(line) for line in result.outlines[end + 1:stop]) <= 120, "leaderboard"
    assert result.outlines[start + 1].split()[:4] == ["verdict", "claim", "backbone", "SAE"]


def test_another_model_under_a_taken_name_is_refused_unless_replace(pytester: pytest.Pytester) -> None:
    _setup(pytester)
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "table6")
    path = pytester.path / "leaderboard" / "results" / "dinov2-b__topk.json"
    first = path.read_text()
    pytester.makepyfile(test_fake_bench=FAKE_BENCH.replace('checkpoint_sha256="feed"', 'checkpoint_sha256="beef"'))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "table6")
    assert result.ret == pytest.ExitCode.TESTS_FAILED and path.read_text() == first
    result.stdout.fnmatch_lines(["*dinov2-b/topk is already taken by another model*--replace*"])
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "table6", "--replace")
    assert result.ret == 0 and json.loads(path.read_text())["sae"]["checkpoint_sha256"] == "beef"
    assert (path.parent / "dinov2-b__topk.json.replaced-0").read_text() == first  # history kept
    result.stdout.fnmatch_lines(["*replaced dinov2-b/topk*kept as dinov2-b__topk.json.replaced-0*"])


def test_regression_mode_passes_on_its_own_baseline_and_fails_on_drift(pytester: pytest.Pytester,
                                                                       tmp_path: Path) -> None:
    _setup(pytester)
    base = tmp_path / "baseline"
    made = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "table6", "--baseline", str(base),
                                        "--update-baseline")
    assert made.ret == 0 and (base / "dinov2-b__topk.json").is_file()
    again = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "table6", "--baseline", str(base))
    assert again.ret == 0
    again.stdout.fnmatch_lines(["*regression: PASS*"])
    pytester.makepyfile(test_fake_bench=FAKE_BENCH.replace("fvu_a=0.05, fvu_o=0.002", "fvu_a=0.051, fvu_o=0.002"))
    drifted = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "table6", "--baseline", str(base))
    assert drifted.ret == pytest.ExitCode.TESTS_FAILED  # every case passed; the regression fails the run
    drifted.stdout.fnmatch_lines(["*record*quantity*baseline*now*delta*tolerance*",
                                  "*dinov2-b/topk*reconstruction/fvu_a*0.05*0.051*", "*regression: FAIL (1 drifts)*"])


def _probe_result(backbone: str, original: float, low_removed: float, sae: str = "batchtopk"):
    from scopebench.analyses import RemovalProbesOutput
    from scopebench.results.records import AnalysisRecord, AnalysisResult, BackboneInfo, SAEInfo, output_json

    output = RemovalProbesOutput(cls_top1_original=original, cls_top1_high_removed=original,
                                 cls_top1_low_removed=low_removed)
    return AnalysisResult(analysis="removal_probes", backbone=BackboneInfo(name=backbone),
                          sae=SAEInfo(name=sae, checkpoint_sha256="feed"),
                          record=AnalysisRecord(config={"epochs": 1}, output=output_json(output)), output=output,
                          device="cpu")


def test_family_claim_is_recorded_once_in_the_largest_sizes_record(tmp_path: Path) -> None:
    from scopebench.claims.registry import get_claim
    from scopebench.plugin.reporter import ClaimReport, SessionClaims, _records
    from scopebench.results.records import load_result, result_path, write_result

    claim = get_claim("figure8.cls-low-removal-gap-narrows")
    session = SessionClaims()
    report = ClaimReport(session, "bench/test_figure8_scaling_plot.py::test[siglip2]", paper_sae="batchtopk")
    sizes = [_probe_result("siglip2-b", 80.0, 60.0), _probe_result("siglip2-g", 88.0, 84.0),
             _probe_result("siglip2-l", 85.0, 75.0)]  # gaps 20, 10, 4 (b, l, g): narrowing
    verdict = report.record_family(claim, "siglip2", sizes)
    assert verdict.passed and verdict.asserted and verdict.margin == 6.0
    assert "sizes: 0=siglip2-b, 1=siglip2-l, 2=siglip2-g" in verdict.detail
    (row,) = session.rows
    assert (row.claim, row.backbone, row.sae, row.verdict, row.margin) == (claim.id, "siglip2-g", "batchtopk", "PASS",
                                                                           6.0)
    records = {r.backbone.name: r for r in _records(session, tmp_path)}
    assert set(records) == {"siglip2-g"}  # one place: the largest size's (backbone, SAE) record
    stored = records["siglip2-g"].claims[claim.id]
    assert stored.measured == {"cls_top1_low_removal_gap[size=0]": 20.0, "cls_top1_low_removal_gap[size=1]": 10.0,
                               "cls_top1_low_removal_gap[size=2]": 4.0}
    path = result_path(tmp_path, "siglip2-g", "batchtopk")
    write_result(records["siglip2-g"], path)
    assert load_result(path).claims[claim.id].margin == 6.0

    scored = ClaimReport(SessionClaims(), "n", paper_sae="batchtopk")
    widening = [_probe_result(n, 80.0, 80.0 - gap, sae="topk") for n, gap in (("deit3-s", 5.0), ("deit3-l", 9.0))]
    verdict = scored.record_family(claim, "deit3", widening)
    assert not verdict.passed and not verdict.fails_run and verdict.margin == -4.0  # another SAE: scored
    assert scored._session.rows[0].verdict == "missed"


def _reconstruction_result(backbone: str, l0_o: float, architecture: str = "batchtopk"):
    from scopebench.analyses import ReconstructionOutput
    from scopebench.results.records import AnalysisRecord, AnalysisResult, BackboneInfo, SAEInfo, output_json

    output = ReconstructionOutput(fvu_a=0.05, fvu_o=0.01, cs_a=0.9, cs_o=0.95, l0_a=30.0, l0_o=l0_o)
    return AnalysisResult(analysis="reconstruction", backbone=BackboneInfo(name=backbone),
                          sae=SAEInfo(name=architecture, config={"architecture": architecture},
                                      checkpoint_sha256="feed"),
                          record=AnalysisRecord(config={}, output=output_json(output)), output=output, device="cpu")


@pytest.fixture
def l0_known_miss(known_planted_miss):
    """The L0 claim as planted v7 registered it: a known planted miss of batch-wide selection (BatchTopK)."""
    known_planted_miss("table6.outliers-fewer-latents", "batch-wide selection", ("batchtopk", "matryoshka"))


def test_a_known_planted_miss_reads_known_miss_and_a_repeated_check_shows_once(l0_known_miss) -> None:
    from scopebench.plugin.reporter import ClaimReport, SessionClaims, _finalise_rows, render_rows

    session = SessionClaims()
    first = ClaimReport(session, "bench/a.py::test[planted]", paper_sae="batchtopk")
    verdicts = first.record(_reconstruction_result("planted", l0_o=200.0))
    first.assert_held(*verdicts)  # the known miss does not fail the case
    labels = {row.claim: row.verdict for row in session.rows}
    assert labels["table6.outliers-fewer-latents"] == "known miss"
    assert labels["table6.outliers-reconstructed-better"] == "PASS"
    n_rows = len(session.rows)
    # a second case checking the same measurement shows its rows instead of the first's (the result file keeps
    # the later verdict), and the first is not listed as having recorded nothing
    second = "bench/b.py::test[planted]"
    ClaimReport(session, second, paper_sae="batchtopk").record(_reconstruction_result("planted", l0_o=200.0))
    session.outcomes.update({"bench/a.py::test[planted]": ("passed", ""), second: ("passed", "")})
    shown = _finalise_rows(session)
    assert len(shown) == n_rows and {row.nodeid for row in shown} == {second}
    # a different measurement of the same claim is a row of its own, and on a real backbone the miss fails
    real = ClaimReport(session, "bench/a.py::test[dinov2-b]", paper_sae="batchtopk")
    verdicts = real.record(_reconstruction_result("dinov2-b", l0_o=200.0))
    shown = _finalise_rows(session)
    assert [row.verdict for row in shown[n_rows:] if row.claim == "table6.outliers-fewer-latents"] == ["FAIL"]
    with pytest.raises(AssertionError, match="l0_o < l0_a fails"):
        real.assert_held(*verdicts)
    table = render_rows(shown)
    assert "known miss  table6.outliers-fewer-latents" in table and max(map(len, table.splitlines())) <= 120
    # a TopK SAE scored beside it: per-token selection is not the known mechanism, so its miss reads "missed"
    ClaimReport(session, "bench/a.py::test[planted-topk]", paper_sae="batchtopk").record(
        _reconstruction_result("planted", l0_o=30.0, architecture="topk"))
    topk = [row for row in session.rows if row.sae == "topk" and row.claim == "table6.outliers-fewer-latents"]
    assert [row.verdict for row in topk] == ["missed"]


def _emd_result(shifts: dict[int, tuple[float, float]]):
    from scopebench.analyses import AttentionEMDOutput
    from scopebench.analyses.attention_emd.output import ShiftEMD
    from scopebench.results.records import AnalysisRecord, AnalysisResult, BackboneInfo, output_json

    output = AttentionEMDOutput(tau=50.0, per_shift={s: ShiftEMD(outlier=out, non_outlier=non, n_outlier=4,
                                                                 n_non_outlier=60)
                                                     for s, (out, non) in shifts.items()})
    return AnalysisResult(analysis="attention_emd", backbone=BackboneInfo(name="planted"), sae=None,
                          record=AnalysisRecord(config={"images": 8}, output=output_json(output)), output=output,
                          device="cpu")


@pytest.mark.parametrize("order", ["table7-first", "table9-first"])
def test_table7s_shift_inside_table9s_shows_once_with_every_shift_whatever_the_order(order: str) -> None:
    """Table 7 measures s=1, Table 9 s=1..6 with the same config: one row per claim, checked on all six shifts,
    and the result file's verdict is that one in either order (a miss at s=4 is not hidden by Table 7's s=1)."""
    from scopebench.plugin.reporter import ClaimReport, SessionClaims, _finalise_rows

    every_shift = {s: (2.0, 0.5 + 0.1 * s) for s in range(1, 7)}
    every_shift[4] = (0.8, 0.9)  # the outliers' EMD falls below the others' at s=4 only
    cases = [("bench/test_table7.py::test[planted]", {1: every_shift[1]}),
             ("bench/test_table9.py::test[planted]", every_shift)]
    if order == "table9-first":
        cases.reverse()
    session = SessionClaims()
    for nodeid, shifts in cases:
        ClaimReport(session, nodeid, paper_sae="batchtopk").record(_emd_result(shifts))
    shown = [row for row in _finalise_rows(session) if row.claim == "table7.outlier-emd-far-above"]
    assert len(shown) == 1 and shown[0].verdict == "FAIL"
    assert set(shown[0].measured) == {f"attn_emd_{side}[s={s}]" for side in ("out", "non") for s in range(1, 7)}
    stored = session.pending[("planted", None)].claims["table7.outlier-emd-far-above"]
    assert not stored.passed and stored.measured == shown[0].measured


def test_a_nan_measurement_fails_its_claim_on_a_first_and_a_repeated_record() -> None:
    """NaN is a failed verdict, not a missing quantity: merging a repeat must not pass it through JSON's null."""
    import math

    from scopebench.plugin.reporter import ClaimReport, SessionClaims

    session = SessionClaims()
    for nodeid in ("bench/a.py::test[dinov2-b]", "bench/b.py::test[dinov2-b]"):
        verdicts = ClaimReport(session, nodeid, paper_sae="batchtopk").record(
            _reconstruction_result("dinov2-b", l0_o=math.nan))
        assert any(not v.passed and "l0_o" in v.detail for v in verdicts)
        stored = session.pending[("dinov2-b", "batchtopk")].claims["table6.outliers-fewer-latents"]
        assert not stored.passed and stored.measured["l0_o"] is None  # NaN, stored as JSON's null
