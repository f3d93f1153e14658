"""bench/seed_margins.py (``make bench-seeds``): each claim's margin per seed, and the exit code on a failure."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_scripts import load_bench_script

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "leaderboard" / "results" / "planted__batchtopk.json"


def _module():
    return load_bench_script("seed_margins")


def _run(tmp_path: Path, name: str, edit) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    raw = json.loads(COMMITTED.read_text())
    edit(raw)
    (folder / COMMITTED.name).write_text(json.dumps(raw))
    return folder


def _rows(text: str) -> dict[str, dict[str, str]]:
    """The Markdown (github) table's rows by claim id, split on its pipes."""
    lines = text.strip().splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[1]] = dict(zip(head, cells))
    return rows


def _margins(raw, value=1.5):
    for verdict in raw["claims"].values():
        verdict.update(passed=True, margin=value)


def test_margins_per_seed_their_minimum_and_a_failure(tmp_path, capsys):
    seed_margins = _module()
    claim = "table4.high-cds-minority"

    def flip(raw):
        _margins(raw, 2.0)
        raw["claims"][claim].update(passed=False, margin=-3.0, asserted=True)
    runs = [_run(tmp_path, "seed-0", _margins), _run(tmp_path, "seed-1", flip), _run(tmp_path, "seed-2", _margins)]
    code = seed_margins.main(["--markdown", str(tmp_path / "margins.md"), *map(str, runs)])
    rows = _rows((tmp_path / "margins.md").read_text())
    assert set(rows) == set(json.loads(COMMITTED.read_text())["claims"])
    row = rows[claim]
    assert row["margin seed-1"] == "-3*" and row["min margin"] == "-3" and row["held at every seed"] == "NO"
    measured = json.loads(COMMITTED.read_text())["claims"][claim]["measured"]
    assert row["measured (seed-0)"] == ", ".join(f"{k}={v:.4g}" for k, v in measured.items())
    assert code == 1  # an asserted claim failed at a seed
    other = next(c for c in rows if c != claim)
    assert [rows[other][k] for k in ("margin seed-0", "margin seed-1", "min margin")] == ["1.5", "2", "1.5"]
    assert rows[other]["held at every seed"] == "yes"
    # the terminal's table: the same margins without relations and values, within 120 columns at three seeds
    *terminal, written = capsys.readouterr().out.splitlines()
    assert written.endswith(f"in Markdown: {tmp_path / 'margins.md'}") and max(map(len, terminal)) <= 120
    cells = {line.split()[1]: line.split()[2:] for line in terminal[3:] if len(line.split()) > 2}
    assert cells[claim] == ["1.5", "-3*", "1.5", "-3", "NO"] and cells[other] == ["1.5", "2", "1.5", "1.5", "yes"]


def test_a_scored_failure_exits_zero_and_an_empty_folder_is_refused(tmp_path, capsys, known_planted_miss):
    seed_margins = _module()
    known_planted_miss("table3.cls-high-removal-improves", "the context barely misleads the probe")

    def scored_miss(raw):
        _margins(raw)
        raw["claims"]["table4.high-cds-minority"].update(passed=False, margin=-1.0, asserted=False)
        raw["claims"]["table3.cls-high-removal-improves"] = {**raw["claims"]["table4.high-cds-minority"]}
    markdown = tmp_path / "margins.md"
    assert seed_margins.main(["--markdown", str(markdown), str(_run(tmp_path, "seed-0", scored_miss))]) == 0
    rows = _rows(markdown.read_text())
    assert rows["table4.high-cds-minority"]["held at every seed"] == "NO"  # scored (leaderboard mode), not known
    assert rows["table3.cls-high-removal-improves"]["held at every seed"] == "known planted miss"
    assert rows["table3.cls-high-removal-improves"]["relation"] == "cls_gain_high_removed_lo > 0"
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        seed_margins.main([str(tmp_path / "empty")])
    assert "no result files in" in capsys.readouterr().err
