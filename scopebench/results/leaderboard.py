"""Leaderboard: every result file of a folder as one table comparing SAE variants per backbone."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from scopebench.backbones.registry import REGISTRY
from scopebench.analyses import ANALYSES
from scopebench.keys import indexed
from scopebench.atomic import write_text_atomic
from scopebench.results.records import ResultFileError, ResultRecord, load_result

def _claims(record: ResultRecord | None) -> str:
    """Claims held / checked, plus how many of the failures the claims exempt this SAE from."""
    if record is None or not record.claims:
        return ""
    held = sum(v.passed for v in record.claims.values())
    expected = sum(not v.passed and v.exemption is not None for v in record.claims.values())
    return f"{held}/{len(record.claims)}" + (f" ({expected} xfail)" if expected else "")


Reader = Callable[[dict[str, float]], object]


def _analysis_columns() -> dict[str, tuple[str, Reader]]:
    """Leaderboard column -> (analysis, read it from that analysis's quantities), from the output models."""
    columns: dict[str, tuple[str, Reader]] = {}
    for name, analysis in ANALYSES.items():
        for info in analysis.output.catalogue(name):
            if info.column is not None:
                key = indexed(info.name, 1) if info.name in analysis.output.INDEXED_QUANTITIES else info.name
                columns[info.column] = (name, lambda q, key=key: q.get(key, math.nan))
        for column, read in getattr(analysis.output, "DERIVED_COLUMNS", {}).items():
            columns[column] = (name, read)
    return columns


COLUMNS: dict[str, tuple[str, Reader]] = _analysis_columns()


def _cell(value: object) -> object:
    return math.nan if value is None else value


def _row(record: ResultRecord, backbone_record: ResultRecord | None) -> dict[str, object]:
    row: dict[str, object] = {"backbone": record.backbone.name, "SAE": record.sae.name if record.sae else ""}
    for column, (analysis, read) in COLUMNS.items():
        source = backbone_record if ANALYSES[analysis].level == "backbone" else record
        output = source.output(analysis) if source is not None else None
        row[column] = _cell(read(output.quantities())) if output is not None else math.nan
    row["claims"] = _claims(record)
    return row


def load_results(results_dir: Path, problems: list[str] | None = None) -> list[ResultRecord]:
    """Every ``*.json`` in ``results_dir``, validated. Missing folder -> [].

    A bad file raises naming it; with a ``problems`` list, it is skipped and its message appended instead.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    records = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            records.append(load_result(path))
        except ResultFileError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
    return records


def build_frame(records: Iterable[ResultRecord]) -> pd.DataFrame:
    """One row per (backbone, SAE), backbone-level columns (attention EMD) read from the backbone's own
    record: backbones in registry order (unknown ones after, by name), SAEs by FVU_A ascending
    (unmeasured last), then by name."""
    records = list(records)
    per_backbone = {r.backbone.name: r for r in records if r.sae is None}
    columns = ["backbone", "SAE", *COLUMNS, "claims"]
    frame = pd.DataFrame([_row(r, per_backbone.get(r.backbone.name)) for r in records if r.sae is not None],
                         columns=columns)
    if frame.empty:
        return frame
    order = {name: i for i, name in enumerate(REGISTRY)}
    frame["_bb"] = frame["backbone"].map(lambda n: order.get(n, len(order)))
    frame = frame.sort_values(["_bb", "backbone", "FVU_A", "SAE"], na_position="last", kind="stable")
    return frame.drop(columns="_bb").reset_index(drop=True)


def _cells(frame: pd.DataFrame) -> list[list[str]]:
    def fmt(value: object) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.4g}"
        return str(value) if value != "" else "–"

    return [[fmt(v) for v in row] for row in frame.itertuples(index=False)]


def render_text(frame: pd.DataFrame) -> str:
    """Plain-text table for the terminal."""
    if frame.empty:
        return "(no results)"
    return tabulate(_cells(frame), headers=list(frame.columns), tablefmt="simple", disable_numparse=True)


def render_markdown(frame: pd.DataFrame) -> str:
    """Markdown document: one section and table per backbone."""
    lines = ["# scopebench leaderboard", "",
             "One row per SAE; lower FVU is better. Δ columns: probe score with the feature group "
             "removed minus the original (accuracy/mIoU in points, depth RMSE in its unit). "
             "Definitions: docs/results-schema.md.", ""]
    if frame.empty:
        return "\n".join(lines + ["(no results)", ""])
    for backbone, part in frame.groupby("backbone", sort=False):
        part = part.drop(columns="backbone")
        lines += [f"## {backbone}", "",
                  tabulate(_cells(part), headers=list(part.columns), tablefmt="github", disable_numparse=True), ""]
    return "\n".join(lines)


def write_leaderboard(results_dir: Path, out_path: Path) -> Path:
    """Render every result in ``results_dir`` to Markdown at ``out_path`` (atomic replace)."""
    text = render_markdown(build_frame(load_results(results_dir)))
    write_text_atomic(Path(out_path), text)
    return Path(out_path)
