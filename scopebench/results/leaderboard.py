"""Leaderboard: every result file of a folder as one table comparing SAE variants per backbone."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from scopebench.backbones.registry import REGISTRY
from scopebench.analyses import ANALYSES, quantity_catalogue
from scopebench.claims.registry import is_known_miss
from scopebench.keys import base_name, index_of, indexed
from scopebench.paper import PAPER_K, PAPER_TABLES, paper_values
from scopebench.atomic import write_text_atomic
from scopebench.results.records import ResultFileError, ResultRecord, load_result

def _claims(record: ResultRecord | None) -> str:
    """Claims held / checked, then the ids of those that did not hold (table and short name); a known miss of
    the backbone for the record's SAE (the planted instrument's, :meth:`~scopebench.claims.registry.Claim.known_miss`)
    is marked so."""
    if record is None or not record.claims:
        return ""
    held = sum(v.passed for v in record.claims.values())
    missed = [cid + (" (known miss)" if is_known_miss(cid, record.backbone.name, record.sae_architecture) else "")
              for cid, v in sorted(record.claims.items()) if not v.passed]
    return f"{held}/{len(record.claims)}" + (f" (not: {', '.join(missed)})" if missed else "")


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


#: Relative distance of L0_A from the paper's k (``PAPER_K``) beyond which a row is not at matched sparsity.
L0_TOLERANCE = 0.2
#: Appended to the L0_A cell of such a row in the text and Markdown tables.
L0_FLAG = "!"


def l0_off_target(l0: object) -> bool:
    """True when an L0_A value is more than ``L0_TOLERANCE`` (relative) away from ``PAPER_K``: that SAE is not
    compared at matched sparsity, and its L0_A cell is rendered with a trailing ``L0_FLAG``."""
    return isinstance(l0, (int, float)) and math.isfinite(l0) and abs(l0 - PAPER_K) / PAPER_K > L0_TOLERANCE


def format_cell(value: object, spec: str | None) -> str:
    """A table cell: a number in its column's format spec (4 significant digits without one; "–" when missing),
    text as it is."""
    if isinstance(value, float):
        return "–" if math.isnan(value) else format(value, spec or ".4g")
    return str(value) if value != "" else "–"


def _cells(frame: pd.DataFrame) -> list[list[str]]:
    formats = [column_formats().get(column) for column in frame.columns]
    flagged = {i for i, column in enumerate(frame.columns) if column == "L0_A"}
    return [[format_cell(v, formats[i]) + (L0_FLAG if i in flagged and l0_off_target(v) else "")
             for i, v in enumerate(row)] for row in frame.itertuples(index=False)]


TEXT_WIDTH = 120
_KEYS = 2  # backbone and SAE start every block
_CELL = 56  # longest cell of the terminal table (the claims column names what did not hold)


def render_text(frame: pd.DataFrame, width: int = TEXT_WIDTH) -> str:
    """Plain-text table for the terminal, its columns split into blocks of at most ``width`` characters, each
    starting with the backbone and SAE (full values are in the result files and the Markdown/HTML pages)."""
    if frame.empty:
        return "(no results)"
    headers = list(frame.columns)
    cells = [[c if len(c) <= _CELL else c[: _CELL - 1] + "…" for c in row] for row in _cells(frame)]

    def table(columns: list[int]) -> str:
        keys = [*range(_KEYS), *columns]
        return tabulate([[row[i] for i in keys] for row in cells], headers=[headers[i] for i in keys],
                        tablefmt="simple", disable_numparse=True)

    blocks: list[list[int]] = [[]]
    for column in range(_KEYS, len(headers)):  # greedy: a column opens a new block when it would not fit
        if blocks[-1] and max(map(len, table([*blocks[-1], column]).splitlines())) > width:
            blocks.append([])
        blocks[-1].append(column)
    return "\n\n".join(table(block) for block in blocks)


def render_markdown(frame: pd.DataFrame) -> str:
    """Markdown document: one section and table per backbone."""
    lines = ["# scopebench leaderboard", "",
             "One row per SAE; lower FVU is better. Δ columns: probe score with the feature group "
             "removed minus the original (accuracy/mIoU in points, depth RMSE in its unit). "
             f"{L0_FLAG} after L0_A: more than {L0_TOLERANCE:.0%} away from the paper's k = {PAPER_K} "
             "(not at matched sparsity). "
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


def write_csv(results_dir: Path, out_path: Path) -> Path:
    """The rows of :func:`build_frame` for every result in ``results_dir`` as CSV at ``out_path`` (atomic)."""
    write_text_atomic(Path(out_path), build_frame(load_results(results_dir)).to_csv(index=False))
    return Path(out_path)


def paper_quantities(backbone: str) -> dict[str, float]:
    """Every quantity the paper reports for ``backbone``, keyed as the analysis outputs key them."""
    return paper_values(backbone, {key for rows in PAPER_TABLES.values() for key in rows.get(backbone, {})})


def paper_row(backbone: str) -> dict[str, object] | None:
    """The paper's values in the leaderboard's columns (SAE "paper"), or None when it reports none of them."""
    quantities = paper_quantities(backbone)
    values = {column: _cell(read(quantities)) for column, (_, read) in COLUMNS.items()}
    if all(isinstance(v, float) and math.isnan(v) for v in values.values()):
        return None
    return {"backbone": backbone, "SAE": "paper", **values, "claims": ""}


class _ReadKeys(dict):
    """Every quantity at 1.0, remembering the keys a derived column's reader asks for."""

    def __init__(self, keys: Iterable[str]) -> None:
        super().__init__(dict.fromkeys(keys, 1.0))
        self.read: list[str] = []

    def __getitem__(self, key: str) -> float:
        self.read.append(key)
        return super().__getitem__(key)

    def get(self, key: str, default: object = None) -> object:
        self.read.append(key)
        return super().get(key, default)


def _quantity_text(key: str) -> str:
    info = quantity_catalogue()[base_name(key)]
    found = index_of(key)
    return f"{info.description} ({info.unit}" + (f", {found[1]}={found[2]})" if found else ")")


def _column_keys() -> dict[str, list[str]]:
    """Leaderboard column -> the quantity keys it is read from."""
    keys = [indexed(q.name, 1) if q.name in ANALYSES[q.analysis].output.INDEXED_QUANTITIES else q.name
            for q in quantity_catalogue().values()]
    found = {}
    for column, (_, read) in COLUMNS.items():
        probe = _ReadKeys(keys)
        read(probe)
        found[column] = list(dict.fromkeys(probe.read))
    return found


def column_formats() -> dict[str, str]:
    """Numeric leaderboard column -> its format spec: that of the (first) quantity it is read from."""
    catalogue = quantity_catalogue()
    return {column: catalogue[base_name(keys[0])].format for column, keys in _column_keys().items() if keys}


def column_descriptions() -> dict[str, str]:
    """Leaderboard column -> what it shows, from the output models' field descriptions (the HTML hover titles)."""
    found = {"backbone": "backbone (registry name)", "SAE": "SAE variant (its result file's name)"}
    for column, keys in _column_keys().items():
        texts = [f"{key}: {_quantity_text(key)}" for key in keys]
        found[column] = texts[0].split(": ", 1)[1] if len(texts) == 1 else "from " + "; ".join(texts)
    return {**found, "claims": (_claims.__doc__ or "").strip()}
