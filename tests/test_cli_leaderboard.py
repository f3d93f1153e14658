"""`scopebench leaderboard`: rendering of hand-written result files, writing, and bad files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_tables import parse_table
from result_files import write_result

from scopebench.cli.main import main
from scopebench.results.leaderboard import build_frame, load_results, render_markdown


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "leaderboard" / "results"
    folder.mkdir(parents=True)
    write_result(folder, "dinov2-b", "relu", {"reconstruction": {"fvu_a": 0.08, "dead_pct": 12.5}},
                 {"c1": False, "c2": True})
    write_result(folder, "dinov2-b", "topk", {"reconstruction": {"fvu_a": 0.05, "fvu_o": 0.001}},
                 {"c1": True, "c2": True})
    write_result(folder, "clip-b16", "topk", {
        "removal_probes": {"seg_miou_original": 25.87, "seg_miou_low_removed": 11.65},
        "cds": {"n_low": 17329, "n_high": 7247}})
    return folder


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_text_table_holds_the_result_values(results, capsys):
    code, out, _ = _cli(capsys, "leaderboard", "--results-dir", str(results), "--width", "0")
    assert code == 0
    rows = parse_table(out, "backbone")
    assert [(r["backbone"], r["SAE"]) for r in rows] == [("clip-b16", "topk"), ("dinov2-b", "topk"),
                                                        ("dinov2-b", "relu")]
    clip, topk, relu = rows
    assert float(clip["Δseg lo"]) == pytest.approx(11.65 - 25.87, abs=1e-3) and clip["n_low/n_high"] == "17329/7247"
    assert clip["FVU_A"] == "–" and clip["claims"] == "–"
    assert (topk["FVU_A"], topk["FVU_O"], topk["claims"]) == ("0.05", "0.001", "2/2")
    assert (relu["FVU_A"], relu["dead %"], relu["claims"]) == ("0.08", "12.50", "1/2 (not: c1)")


def test_markdown_andwrite_result(results, tmp_path, capsys):
    code, out, _ = _cli(capsys, "leaderboard", "--results-dir", str(results), "--markdown")
    assert code == 0 and out == render_markdown(build_frame(load_results(results))) + "\n"
    assert [line for line in out.splitlines() if line.startswith("## ")] == ["## clip-b16", "## dinov2-b"]
    target = tmp_path / "board" / "LEADERBOARD.md"
    code, out, _ = _cli(capsys, "leaderboard", "--results-dir", str(results), "--write", str(target))
    assert code == 0 and out == f"wrote {target} (3 result files from {results})\n"
    text = target.read_text()
    assert "| topk  | 0.05    | 0.001" in text and "| relu  | 0.08" in text
    assert [p.name for p in target.parent.iterdir()] == ["LEADERBOARD.md"]  # no temp file left behind


def test_default_folder_is_in_the_project_root(results, tmp_path, monkeypatch, capsys):
    """The rule of the pytest plugin: leaderboard/results in the project root (the nearest folder holding a
    pytest config file, as pytest picks its rootdir), so a subfolder of the project reads the same results."""
    monkeypatch.chdir(tmp_path)  # no config file above: the current folder is the root
    code, out, _ = _cli(capsys, "leaderboard")
    assert code == 0 and [row["SAE"] for row in parse_table(out, "backbone")] == ["topk", "topk", "relu"]
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    monkeypatch.chdir(tmp_path / "leaderboard")
    code, out, _ = _cli(capsys, "leaderboard")
    assert code == 0 and len(parse_table(out, "backbone")) == 3
    other = tmp_path / "other"
    other.mkdir()
    (other / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.chdir(other)
    code, out, err = _cli(capsys, "leaderboard")
    assert code == 2 and out == "" and f"no results folder at {other / 'leaderboard' / 'results'}" in err
    assert "--results-dir" in err


def test_results_dir_is_the_plugin_option(capsys):
    """One definition: `scopebench leaderboard --results-dir` is the plugin's row, help text included."""
    from scopebench.plugin.options import BY_FLAG

    with pytest.raises(SystemExit):
        main(["leaderboard", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert " ".join(BY_FLAG["--results-dir"].help.split()) in out


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, _ = _cli(capsys, "leaderboard", "--results-dir", str(tmp_path / "empty"))
    assert code == 0 and out == "(no results)\n"


@pytest.mark.parametrize("content, problem", [
    ("{", "not valid JSON"),
    (json.dumps({"schema_version": 1, "backbone": {"name": "x"}, "sae": {"name": "y"}}), "field 'environment'"),
])
def test_bad_result_file_is_named_with_exit_2(results, tmp_path, capsys, content, problem):
    bad = results / "broken.json"
    bad.write_text(content)
    target = tmp_path / "LEADERBOARD.md"
    for extra in ([], ["--write", str(target)]):
        code, out, err = _cli(capsys, "leaderboard", "--results-dir", str(results), *extra)
        assert code == 2 and out == ""
        assert err.startswith(f"error: bad result file: {bad}") and problem in err
    assert not target.exists()


@pytest.mark.parametrize(("target", "message"), [("", "is a folder"), ("afile/LEADERBOARD.md", "which is a file")])
def test_write_target_that_cannot_hold_a_file_is_an_error_not_a_traceback(results, tmp_path, capsys, target,
                                                                          message):
    (tmp_path / "afile").write_text("keep me")
    code, out, err = _cli(capsys, "leaderboard", "--results-dir", str(results), "--write", str(tmp_path / target))
    assert code == 2 and out == "" and f"--write {tmp_path / target}" in err and message in err
    assert (tmp_path / "afile").read_text() == "keep me"


def test_results_dir_that_is_a_file_is_an_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = _cli(capsys, "leaderboard", "--results-dir", str(tmp_path / "afile"))
    assert code == 2 and "no results folder at" in err
