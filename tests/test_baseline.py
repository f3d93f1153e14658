"""The committed regression baseline (bench/baseline): readable, with a tolerance for every quantity it
holds, and documented in docs/regression.md."""
from __future__ import annotations

import json
from pathlib import Path

from scopebench.analyses import ANALYSES
from scopebench.results.leaderboard import load_results
from scopebench.results.regression import TOLERANCES_FILE, compare_dirs, tolerance_table

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "bench" / "baseline"


def test_every_baseline_quantity_has_a_measured_tolerance() -> None:
    records = load_results(BASELINE)
    tolerances = json.loads((BASELINE / TOLERANCES_FILE).read_text())
    assert tolerances["seeds"] >= 3 and {r.backbone.name for r in records} == {"planted"}
    keys = {f"{r.backbone.name}/{r.sae.name if r.sae else '(backbone)'}/{a}/{q}"
            for r in records for a in r.analyses for q in r.output(a).quantities()
            if q not in ANALYSES[a].output.DERIVED}  # derived ones follow from these: regression skips them
    assert keys <= set(tolerances["quantities"])


def test_the_committed_planted_results_pass_against_the_baseline() -> None:
    passed, report = compare_dirs(load_results(ROOT / "leaderboard" / "results"), BASELINE)
    assert passed, report


def test_the_tolerance_table_in_the_docs_is_current() -> None:
    table = tolerance_table(json.loads((BASELINE / TOLERANCES_FILE).read_text()))
    assert table in (ROOT / "docs" / "regression.md").read_text(), "paste `scopebench tolerances` output into it"
