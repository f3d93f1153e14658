"""Leaderboard rendering from hand-written result files."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from result_files import write_result
from scopebench.results.leaderboard import build_frame, load_results, render_markdown, render_text, write_leaderboard
from scopebench.results.records import ResultFileError


@pytest.fixture
def results(tmp_path: Path) -> Path:
    write_result(tmp_path, "dinov2-b", "topk", {"reconstruction": {"fvu_a": 0.05, "fvu_o": 0.001, "cs_a": 0.9,
                                                                   "cs_o": 0.99}},
                 {"table6.a": True, "table6.b": True})
    write_result(tmp_path, "dinov2-b", "relu", {"reconstruction": {"fvu_a": 0.08, "fvu_o": None, "dead_pct": 12.5}},
                 {"table6.a": False, "table6.b": True})
    write_result(tmp_path, "dinov2-b", "matryoshka", {"awcds": {"awcds_top_bin": 0.3}})
    write_result(tmp_path, "dinov2-b", None, {"attention_emd": {"per_shift": {"1": {
        "outlier": 6.5, "non_outlier": 0.7, "n_outlier": 3, "n_non_outlier": 30}}}})
    write_result(tmp_path, "clip-b16", "topk", {
        "reconstruction": {"fvu_a": 0.1}, "cds": {"n_low": 17329, "n_high": 7247},
        "removal_probes": {"cls_top1_original": 74.82, "cls_top1_high_removed": 75.54, "seg_miou_original": 25.87,
                           "seg_miou_low_removed": 11.65, "depth_rmse_original": 0.8841,
                           "depth_rmse_low_removed": 0.9481},
    })
    write_result(tmp_path, "my-vit", "topk", {"reconstruction": {"fvu_a": 0.3}})
    return tmp_path


def test_rows_are_ordered_by_registry_then_fvu(results: Path) -> None:
    frame = build_frame(load_results(results))
    assert list(zip(frame["backbone"], frame["SAE"])) == [
        ("clip-b16", "topk"), ("dinov2-b", "topk"), ("dinov2-b", "relu"), ("dinov2-b", "matryoshka"),
        ("my-vit", "topk"),
    ]


def test_values_and_derived_columns(results: Path) -> None:
    frame = build_frame(load_results(results)).set_index(["backbone", "SAE"])
    clip = frame.loc[("clip-b16", "topk")]
    assert clip["Δcls hi"] == pytest.approx(75.54 - 74.82)
    assert clip["Δseg lo"] == pytest.approx(11.65 - 25.87)
    assert clip["Δdepth lo"] == pytest.approx(0.9481 - 0.8841)
    assert math.isnan(clip["Δseg hi"]) and clip["n_low/n_high"] == "17329/7247"
    relu = frame.loc[("dinov2-b", "relu")]
    assert math.isnan(relu["FVU_O"]) and relu["dead %"] == 12.5 and relu["claims"] == "1/2 (not: table6.a)"
    assert frame.loc[("dinov2-b", "topk")]["claims"] == "2/2"
    # the backbone-level record has no row of its own; its columns appear on every SAE row of that backbone
    assert all(frame.loc[("dinov2-b", sae)]["EMD out (s=1)"] == 6.5 for sae in ("topk", "relu", "matryoshka"))
    assert math.isnan(clip["EMD out (s=1)"]) and "" not in set(frame.reset_index()["SAE"])


def test_text_and_markdown_rendering(results: Path) -> None:
    frame = build_frame(load_results(results))
    text = render_text(frame)
    assert max(len(line) for line in text.splitlines()) <= 120  # columns split into blocks that fit a terminal
    relu = " ".join(line for line in text.splitlines() if " relu " in line).split()
    assert "0.08" in relu and "12.50" in relu and "1/2" in relu and "–" in relu
    assert all(line.split()[:2] == ["backbone", "SAE"] for line in text.splitlines() if "FVU" in line or "Δ" in line)
    assert render_text(frame, width=10_000).count("\n\n") == 0  # a wide terminal gets one block
    markdown = render_markdown(frame)
    sections = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert sections == ["## clip-b16", "## dinov2-b", "## my-vit"]
    dinov2 = markdown.split("## dinov2-b")[1].split("## my-vit")[0]
    rows = [line for line in dinov2.splitlines() if line.startswith("| ") and "FVU_A" not in line]
    assert [r.split("|")[1].strip() for r in rows] == ["topk", "relu", "matryoshka"]


def test_write_leaderboard_atomically(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "board" / "LEADERBOARD.md"
    write_leaderboard(results, out)
    assert out.read_text() == render_markdown(build_frame(load_results(results)))
    assert [p.name for p in out.parent.iterdir()] == ["LEADERBOARD.md"]


def test_bad_file_is_named(results: Path) -> None:
    (results / "broken__x.json").write_text('{"schema_version": 1}')
    with pytest.raises(ResultFileError, match="broken__x.json.*field 'backbone'"):
        load_results(results)


def test_empty_folder(tmp_path: Path) -> None:
    assert render_text(build_frame(load_results(tmp_path / "absent"))) == "(no results)"
    assert "(no results)" in render_markdown(build_frame([]))


def test_each_column_has_one_precision_in_every_table(results: Path) -> None:
    """A quantity's format comes from its unit (scopebench.analyses.base.UNIT_FORMATS): the terminal, the
    Markdown and the HTML tables show the same digits."""
    from scopebench.analyses import quantity_catalogue
    from scopebench.analyses.base import UNIT_FORMATS, quantity
    from scopebench.results.html import render_html
    from scopebench.results.leaderboard import column_formats

    assert all(info.unit in UNIT_FORMATS for info in quantity_catalogue().values())
    with pytest.raises(ValueError, match="no display precision"):
        quantity("a new quantity", "furlongs")
    formats = column_formats()
    assert (formats["FVU_A"], formats["L0_A"], formats["dead %"], formats["Δdepth lo"]) == (".3g", ".3g", ".2f", ".3f")
    records = load_results(results)
    frame = build_frame(records)
    text, markdown = render_text(frame), render_markdown(frame)
    for shown in ("0.05", "0.001", "0.9000", "0.9900", "12.50", "0.72", "-14.22", "0.064"):
        # topk's CS, then the Δ columns of clip-b16 (cls: 75.54 - 74.82, seg: 11.65 - 25.87, depth: 0.9481 - 0.8841)
        assert shown in text and shown in markdown, shown
    page = render_html(records)
    assert "data.toPrecision(3)" in page and "data.toFixed(4)" in page and "data.toFixed(2)" in page
