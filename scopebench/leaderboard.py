"""Leaderboard: every result file of a folder as one table comparing SAE variants per backbone."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from scopebench.backbones.registry import REGISTRY
from scopebench.claims import indexed
from scopebench.atomic import write_text_atomic
from scopebench.results import ResultFileError, ResultRecord, load_result

_EMD_OUT = indexed("attn_emd_out", 1)
_EMD_NON = indexed("attn_emd_non", 1)


def _find(record: ResultRecord, quantity: str) -> float:
    """A quantity wherever the record holds it (tables are groups; a quantity name means one thing)."""
    for table in sorted(record.measurements):
        value = record.measurements[table].get(quantity)
        if value is not None:
            return value
    return math.nan


def _delta(record: ResultRecord, kind: str, variant: str) -> float:
    return _find(record, f"{kind}_{variant}_removed") - _find(record, f"{kind}_original")


def _groups(record: ResultRecord) -> str:
    n_low, n_high = _find(record, "n_low"), _find(record, "n_high")
    if math.isnan(n_low) or math.isnan(n_high):
        return ""
    return f"{n_low:.0f}/{n_high:.0f}"


def _claims(record: ResultRecord) -> str:
    """Claims held / checked, plus how many of the failures the claims exempt this SAE from."""
    if not record.claims:
        return ""
    held = sum(v.passed for v in record.claims.values())
    expected = sum(not v.passed and v.exemption is not None for v in record.claims.values())
    return f"{held}/{len(record.claims)}" + (f" ({expected} xfail)" if expected else "")


#: Leaderboard column -> how to read it from a record. Probe deltas are
#: (features removed) - (original), in the probe's unit.
COLUMNS: dict[str, Callable[[ResultRecord], object]] = {
    "backbone": lambda r: r.backbone.name,
    "SAE": lambda r: r.sae.name,
    "FVU_A": lambda r: _find(r, "fvu_a"),
    "FVU_O": lambda r: _find(r, "fvu_o"),
    "L0_A": lambda r: _find(r, "l0_a"),
    "CS_A": lambda r: _find(r, "cs_a"),
    "CS_O": lambda r: _find(r, "cs_o"),
    "dead %": lambda r: _find(r, "dead_pct"),
    "n_low/n_high": _groups,
    "EMD out (s=1)": lambda r: _find(r, _EMD_OUT),
    "EMD non (s=1)": lambda r: _find(r, _EMD_NON),
    "Δcls hi": lambda r: _delta(r, "cls_top1", "high"),
    "Δcls lo": lambda r: _delta(r, "cls_top1", "low"),
    "Δseg hi": lambda r: _delta(r, "seg_miou", "high"),
    "Δseg lo": lambda r: _delta(r, "seg_miou", "low"),
    "Δdepth hi": lambda r: _delta(r, "depth_rmse", "high"),
    "Δdepth lo": lambda r: _delta(r, "depth_rmse", "low"),
    "claims": _claims,
}


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
    """One row per (backbone, SAE): backbones in registry order (unknown ones after, by name),
    SAEs by FVU_A ascending (unmeasured last), then by name."""
    frame = pd.DataFrame([{col: read(rec) for col, read in COLUMNS.items()} for rec in records],
                         columns=list(COLUMNS))
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
