"""The leaderboard as one self-contained HTML page that works offline.

Per backbone: the SAE table (DataTables through itables, its JavaScript and CSS inlined once in
the page: sortable, searchable, each header's hover title from the output models' field
descriptions) with the paper's values as a reference row where the paper gives them, the claims
each SAE holds, the backbone-level measurements (attention EMD per shift) once, and the plots as
PNG data URIs, drawn from the result files alone: the sparsity-fidelity frontier (FVU_A against
L0_A), attention EMD against the SCC shift, the CDS histograms (Figure 6), the awCDS curves
(Figure 7), the removal deltas (Tables 3, 8) and each SAE's feature-map grids over the images they
come from (Figures 9, 10). Nothing is fetched when the page is opened.
"""
from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from pathlib import Path

import itables
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd
from itables.javascript import generate_init_offline_itables_html
from itables.typing import JavascriptFunction

from scopebench.analyses import ANALYSES, quantity_catalogue
from scopebench.claims.registry import is_known_miss
from scopebench.atomic import write_text_atomic
from scopebench.keys import index_of
from scopebench.results.leaderboard import (
    COLUMNS, build_frame, column_descriptions, column_formats, format_cell, load_results, paper_quantities, paper_row,
)
from scopebench.results.plots import (
    plot_attention_emd_vs_shift, plot_awcds_by_norm, plot_cds_histograms, plot_feature_maps, plot_removal_deltas,
    save_png,
)
from scopebench.results.records import ResultRecord

#: leaderboard columns read from the backbone-level record: shown once per backbone, not in the SAE rows
BACKBONE_COLUMNS = [column for column, (analysis, _) in COLUMNS.items() if ANALYSES[analysis].level == "backbone"]

# DataTables callbacks: a number with its column's decimals (those of the terminal and Markdown tables) and "–"
# for a missing value (sorting uses the number), and each header's title from the page's column-titles block.
def _render_float(spec: str | None) -> str:
    """The JavaScript of Python's ``format(x, spec)`` for ".Nf" and ".Ng" (4 significant digits without a spec)."""
    digits, kind = int((spec or ".4g")[1:-1]), (spec or ".4g")[-1]
    shown = f"data.toFixed({digits})" if kind == "f" else f"String(Number(data.toPrecision({digits})))"
    return ('function (data, type) { if (type !== "display" && type !== "filter") '
            'return Number.isFinite(data) ? data : null; '
            f'return Number.isFinite(data) ? {shown} : "\u2013"; }}')


_SET_TITLES = ('function (settings) { const titles = JSON.parse(document.getElementById("column-titles").textContent); '
               'for (const th of settings.nTable.tHead.rows[0].cells) '
               'th.title = titles[th.textContent.trim()] || ""; }')

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h2 { border-bottom: 2px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table.plain { border-collapse: collapse; margin: .5em 0; }
table.plain th, table.plain td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
table.plain th { background: #f4f4f4; } table.plain td:first-child { text-align: left; }
td.held { color: #176117; } td.missed { color: #a31515; font-weight: bold; } td.known { color: #8a5a00; }
figure { display: inline-block; margin: .5em 1em .5em 0; } figcaption { font-size: .9em; color: #555; }
"""




def _plain_table(header: list[tuple[str, str]], rows: list[list[tuple[object, str]]]) -> str:
    """A static table; every header and cell is (text, hover title)."""
    def cell(tag: str, text: object, title: str, klass: str = "") -> str:
        attrs = (f' title="{html.escape(title)}"' if title else "") + (f' class="{klass}"' if klass else "")
        return f"<{tag}{attrs}>{html.escape(format_cell(text, None))}</{tag}>"

    head = "".join(cell("th", text, title) for text, title in header)
    body = "".join("<tr>" + "".join(cell("td", text, title, _verdict_class(text)) for text, title in row) + "</tr>"
                   for row in rows)
    return f'<table class="plain"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _verdict_class(text: object) -> str:
    return {"held": "held", "not held": "missed", "known miss": "known"}.get(str(text), "")


def _sae_table(part: pd.DataFrame, table_id: str) -> str:
    """The SAE rows (and the paper row) as a DataTable: sortable, searchable, its data inline."""
    formats = column_formats()
    floats = [i for i, column in enumerate(part.columns) if part[column].dtype.kind == "f"]
    by_format: dict[str | None, list[int]] = {}
    for i in floats:
        by_format.setdefault(formats.get(part.columns[i]), []).append(i)
    return itables.to_html_datatable(
        part, table_id=table_id, connected=False, display_logo_when_loading=False, showIndex=False, paging=False,
        order=[], classes="display compact", text_in_header_can_be_selected=False,
        layout={"topStart": None, "topEnd": "search", "bottomStart": "info", "bottomEnd": None},
        columnDefs=[{"targets": targets, "render": JavascriptFunction(_render_float(d))}
                    for d, targets in by_format.items()],
        drawCallback=JavascriptFunction(_SET_TITLES))


def _sae_rows(frame: pd.DataFrame, backbone: str) -> pd.DataFrame:
    """The backbone's SAE rows without the backbone-level columns, the paper's row first where it has one; a
    missing text (n_low/n_high) reads "–" as a missing number does."""
    part = frame[frame["backbone"] == backbone]
    paper = paper_row(backbone)
    if paper is not None:
        part = pd.concat([pd.DataFrame([paper], columns=frame.columns), part], ignore_index=True)
    part = part.drop(columns=["backbone", *BACKBONE_COLUMNS])
    return part.fillna({column: "\u2013" for column in part.columns if part[column].dtype.kind != "f"})


def _claims_table(records: list[ResultRecord]) -> str:
    """One row per claim, one column per SAE: held / not held / known miss, the comparison on hover."""
    ids = sorted({cid for record in records for cid in record.claims})
    if not ids:
        return "<p>No claims were checked for these SAEs.</p>"
    source = {cid: v.source for record in records for cid, v in record.claims.items()}
    header = [("claim", "claim id (scopebench claims lists them)"), ("source", "where the paper makes the claim")]
    title = ("verdict for this SAE (known miss: the backbone is known not to show the claim with an SAE of this "
             "architecture, so it is scored, not asserted); hover a cell for the comparison")
    header += [(record.sae.name, title) for record in records]
    rows = [[(cid, ""), (source[cid], ""), *(_verdict(record, cid) for record in records)] for cid in ids]
    return _plain_table(header, rows)


def _verdict(record: ResultRecord, claim: str) -> tuple[str, str]:
    verdict = record.claims.get(claim)
    if verdict is None:
        return "", "not checked for this SAE"
    margin = "" if verdict.margin is None else f" (margin {verdict.margin:+.3g})"
    if verdict.passed:
        return "held", verdict.detail + margin
    known = is_known_miss(claim, record.backbone.name, record.sae_architecture)
    return ("known miss" if known else "not held"), verdict.detail + margin


def _backbone_quantities() -> list[str]:
    """Base names of the backbone-level analyses' quantities, in catalogue order."""
    return [info.name for name, a in ANALYSES.items() if a.level == "backbone" for info in a.output.catalogue(name)]


def _backbone_values(record: ResultRecord | None, backbone: str) -> dict[tuple[str, int], dict[str, float]]:
    """(index name, index) -> {column: value} of the backbone-level quantities, measured and the paper's."""
    names = set(_backbone_quantities())
    measured: dict[str, float] = {}
    for name in (n for n, a in ANALYSES.items() if a.level == "backbone"):
        output = record.output(name) if record is not None else None
        measured.update(output.quantities() if output is not None else {})
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for prefix, values in (("", measured), ("paper ", paper_quantities(backbone))):
        for key, value in values.items():
            base, index, at = index_of(key) or (key, "", 0)
            if base in names:
                rows.setdefault((index, at), {})[prefix + base] = value
    return dict(sorted(rows.items()))


def _backbone_table(record: ResultRecord | None, backbone: str) -> str:
    rows = _backbone_values(record, backbone)
    if not rows:
        return "<p>No backbone-level measurements for this backbone.</p>"
    columns = [prefix + name for prefix in ("", "paper ") for name in _backbone_quantities()
               if any(prefix + name in values for values in rows.values())]
    catalogue = quantity_catalogue()

    def title(column: str) -> str:
        base = column.removeprefix("paper ")
        info = catalogue[base]
        return ("the paper's value of: " if column != base else "") + f"{info.description} ({info.unit})"

    header = [("s", "SCC shift s (patches)")] + [(column, title(column)) for column in columns]
    formats = {column: catalogue[column.removeprefix("paper ")].format for column in columns}
    body = [[(f"{index}={at}" if index else "", ""),
             *((format_cell(values.get(c, math.nan), formats[c]), "") for c in columns)]
            for (index, at), values in rows.items()]
    return _plain_table(header, body)


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _frontier_png(part: pd.DataFrame, backbone: str, path: Path) -> Path | None:
    """FVU_A against L0_A of the SAE rows, the Pareto front (lower-left is better) and the paper's point."""
    points = part[part["SAE"] != "paper"][["SAE", "L0_A", "FVU_A"]].dropna()
    if points.empty:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.scatter(points["L0_A"], points["FVU_A"], color="royalblue", label="SAE", zorder=3)
    for name, l0, fvu in zip(points["SAE"], points["L0_A"], points["FVU_A"]):
        ax.annotate(name, (l0, fvu), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = points.sort_values(["L0_A", "FVU_A"])
    front = front[front["FVU_A"] < front["FVU_A"].cummin().shift(fill_value=np.inf)]
    ax.plot(front["L0_A"], front["FVU_A"], drawstyle="steps-post", color="0.5", label="frontier")
    paper = part[part["SAE"] == "paper"][["L0_A", "FVU_A"]].dropna()
    if not paper.empty:
        ax.plot(paper["L0_A"], paper["FVU_A"], "r*", markersize=12, label="paper")
    ax.set(xlabel="L0_A (latents per token)", ylabel="FVU_A", title=f"{backbone}: sparsity vs fidelity")
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.legend(fontsize=8)
    return save_png(fig, path)


def _emd_png(record: ResultRecord | None, backbone: str, path: Path) -> Path | None:
    output = record.output("attention_emd") if record is not None else None
    if output is None or not output.per_shift:
        return None
    shifts = sorted(output.per_shift)
    plot_attention_emd_vs_shift(shifts, [output.per_shift[s].non_outlier for s in shifts],
                                [output.per_shift[s].outlier for s in shifts], path,
                                title=f"{backbone}: attention EMD under SCC")
    return path


def _cds_png(saes: list[ResultRecord], backbone: str, path: Path) -> Path | None:
    outputs = {r.sae.name: r.output("cds") for r in saes}
    shown = {name: out for name, out in outputs.items() if out is not None and out.histogram is not None}
    if not shown:
        return None
    plot_cds_histograms({n: (o.histogram.edges, o.histogram.counts) for n, o in shown.items()},
                        {n: o.gamma for n, o in shown.items()}, path, title=f"{backbone}: CDS per SAE")
    return path


def _awcds_png(saes: list[ResultRecord], backbone: str, path: Path) -> Path | None:
    outputs = {r.sae.name: r.output("awcds") for r in saes}
    tables = {name: pd.DataFrame([row.model_dump() for row in out.curve])
              for name, out in outputs.items() if out is not None and out.curve}
    if not tables:
        return None
    plot_awcds_by_norm(tables, path, title=f"{backbone}: awCDS by token norm")
    return path


def _deltas_png(part: pd.DataFrame, backbone: str, path: Path) -> Path | None:
    columns = [c for c in ANALYSES["removal_probes"].output.DERIVED_COLUMNS if c in part.columns]
    deltas = part[part["SAE"] != "paper"].set_index("SAE")[columns].apply(pd.to_numeric, errors="coerce")
    deltas = deltas.dropna(how="all").dropna(axis=1, how="all")
    if deltas.empty:
        return None
    plot_removal_deltas(deltas, path, title=f"{backbone}: removed - original")
    return path


def _feature_map_pngs(saes: list[ResultRecord], backbone: str, folder: Path, i: int) -> list[tuple[Path, str]]:
    """Figures 9 and 10 per SAE: the lowest- and highest-CDS features' maps over their top images."""
    pngs = []
    for j, record in enumerate(saes):
        output = record.output("feature_maps")
        for group, figure in (("low", 9), ("high", 10)):
            panels = [p for p in (output.panels if output is not None else []) if p.group == group]
            if not panels:
                continue
            path = folder / f"maps-{i}-{j}-{group}.png"
            plot_feature_maps(np.array([p.maps for p in panels]), path, feature_ids=[p.feature for p in panels],
                              cds=[p.cds for p in panels],
                              images=np.array([p.thumbnail_pixels() for p in panels]),
                              title=f"{record.sae.name}: {group}-CDS features")
            pngs.append((path, f"Figure {figure}, {record.sae.name}: {group}-CDS features on their top images"))
    return pngs


def _figures(pngs: list[tuple[Path | None, str]]) -> str:
    shown = [f'<figure><img src="{_png_uri(path)}" alt="{html.escape(caption)}"><figcaption>'
             f'{html.escape(caption)}</figcaption></figure>' for path, caption in pngs if path is not None]
    return "".join(shown) or "<p>Nothing to plot yet.</p>"


def _section(i: int, backbone: str, frame: pd.DataFrame, records: list[ResultRecord], folder: Path) -> str:
    saes = [r for r in records if r.backbone.name == backbone and r.sae is not None]
    own = next((r for r in records if r.backbone.name == backbone and r.sae is None), None)
    part = _sae_rows(frame, backbone)
    pngs = [(_frontier_png(part, backbone, folder / f"frontier-{i}.png"), "FVU_A against L0_A per SAE"),
            (_emd_png(own, backbone, folder / f"emd-{i}.png"), "attention EMD against the SCC shift s"),
            (_cds_png(saes, backbone, folder / f"cds-{i}.png"), "Figure 6: CDS histogram per SAE (dashed: gamma)"),
            (_awcds_png(saes, backbone, folder / f"awcds-{i}.png"), "Figure 7: awCDS by token-norm percentile"),
            (_deltas_png(part, backbone, folder / f"deltas-{i}.png"),
             "Tables 3, 8: probe score with a feature group removed minus the original"),
            *_feature_map_pngs(saes, backbone, folder, i)]
    table = _sae_table(part, f"sae-table-{i}") if len(part) else "<p>No SAE results for this backbone.</p>"
    return (f'<section id="backbone-{i}"><h2>{html.escape(backbone)}</h2>'
            f"<h3>SAEs</h3>{table}<h3>Claims held per SAE</h3>{_claims_table(saes)}"
            f"<h3>Backbone-level measurements</h3>{_backbone_table(own, backbone)}"
            f"<h3>Plots</h3>{_figures(pngs)}</section>")


_INTRO = ("One table per backbone, one row per SAE: click a header to sort, type in Search to filter, hover a "
          "header for what the column measures. Lower FVU is better. \u0394 columns: probe score with the "
          "feature group removed minus the original (accuracy/mIoU in points, depth RMSE in its unit). The row "
          "<em>paper</em> holds the paper's values where it reports them. Definitions: docs/results-schema.md.")


def render_html(records: list[ResultRecord]) -> str:
    """The whole page: DataTables' JavaScript and CSS, the data and the plots inline (no external asset)."""
    frame = build_frame(records)
    backbones = list(dict.fromkeys([*frame["backbone"], *sorted(r.backbone.name for r in records)]))
    titles = json.dumps(column_descriptions(), ensure_ascii=False).replace("</", "<\\/")
    links = " · ".join(f'<a href="#backbone-{i}">{html.escape(b)}</a>' for i, b in enumerate(backbones))
    with tempfile.TemporaryDirectory() as folder:
        sections = "".join(_section(i, b, frame, records, Path(folder)) for i, b in enumerate(backbones))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>scopebench leaderboard</title>'
            f"<style>{_STYLE}</style>{generate_init_offline_itables_html(itables.options.dt_bundle)}</head><body>"
            f'<h1>scopebench leaderboard</h1><p>{_INTRO}</p><nav>{links}</nav>'
            f'<script type="application/json" id="column-titles">{titles}</script>'
            f"{sections or '<p>(no results)</p>'}</body></html>\n")


def write_html(results_dir: Path, out_path: Path) -> Path:
    """Render every result in ``results_dir`` as one self-contained HTML page at ``out_path`` (atomic replace)."""
    write_text_atomic(Path(out_path), render_html(load_results(results_dir)))
    return Path(out_path)
