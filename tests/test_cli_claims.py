"""`scopebench claims`: the claims registry and the paper's numbers, checked against the supplement."""
from __future__ import annotations

import pytest
from cli_tables import parse_table

from scopebench.claims import registry
from scopebench.claims.registry import CLAIMS, PLANTED, Claim, Relation
from scopebench.cli.main import main
from scopebench.cli.claims import render_claims


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _section(out: str, claim_id: str) -> str:
    """The paper-values block printed under a claim's heading."""
    return out.split(f"\n{claim_id} — ", 1)[1]


def test_summary_lists_every_claim_with_source_relation_and_backbones(capsys):
    code, out, _ = _cli(capsys, "claims")
    assert code == 0
    rows = {row["id"]: row for row in parse_table(out, "id")}
    assert list(rows) == [claim.id for claim in CLAIMS]
    table6 = rows["table6.outliers-reconstructed-better"]
    assert table6["source"] == "Table 6" and table6["relation"] == "fvu_o <= fvu_a"
    names = table6["backbones"].replace(",", " ").split()  # wrapped between names, never inside one
    assert names == ["clip-b16", "clip-l14", "clip-l14-336", "dinov2-b", "dinov2-l", "dinov2-g", "deit3-s",
                     "deit3-b", "deit3-l", "siglip2-b", "siglip2-l", "siglip2-g", "planted"]
    assert all(len(line) <= 48 for line in table6["backbones"].splitlines())
    assert rows["table3.cls-high-removal-improves"]["relation"] == "cls_gain_high_removed_lo > 0"
    assert rows["table9.outlier-attention-unstable-every-shift"]["relation"].replace("\n", " ") == \
        "attn_emd_out > attn_emd_non for every s"
    assert all(len(line) <= 120 for line in out.splitlines())
    assert "(the paper gives no numbers for this figure)" in _section(out, "figure7.awcds-peaks-at-high-norm")


def test_table_filter_and_table6_paper_values(capsys):
    code, out, _ = _cli(capsys, "claims", "--table", "table6")
    assert code == 0
    assert [row["id"] for row in parse_table(out, "id")] == ["table6.outliers-reconstructed-better",
                                                            "table6.outliers-cosine-higher",
                                                            "table6.outliers-fewer-latents"]
    values = {row["backbone"]: row for row in parse_table(_section(out, "table6.outliers-reconstructed-better"),
                                                          "backbone")}
    # Supplement Table 6, FVU_A / FVU_O columns.
    assert (values["clip-b16"]["fvu_o"], values["clip-b16"]["fvu_a"]) == ("0.021", "0.099")
    assert (values["deit3-b"]["fvu_o"], values["deit3-b"]["fvu_a"]) == ("0.101", "0.215")
    assert len(values) == 12 and {row["holds"] for row in values.values()} == {"yes"}
    fvu_section, cos_section = _section(out, "table6.outliers-reconstructed-better").split(
        "\ntable6.outliers-cosine-higher — ")
    latents = {row["backbone"]: row for row in parse_table(_section(out, "table6.outliers-fewer-latents"), "backbone")}
    # Supplement Table 6, L0_O / L0_A: DINOv2-G's outliers come closest to the average token (28.709 vs 30.664)
    assert (latents["dinov2-g"]["l0_o"], latents["dinov2-g"]["l0_a"], latents["dinov2-g"]["holds"]) == (
        "28.709", "30.664", "yes")
    assert len(latents) == 12 and {row["holds"] for row in latents.values()} == {"yes"}
    assert "not expected of" not in cos_section


def test_every_shift_of_table9(capsys):
    _, out, _ = _cli(capsys, "claims", "--table", "table9")
    rows = parse_table(_section(out, "table9.outlier-attention-unstable-every-shift"), "backbone")
    # Supplement Table 9 (CLIP-L/14-336, s = 1..6): outlier vs non-outlier attention EMD.
    outlier = [5.179, 6.752, 6.869, 6.876, 5.811, 5.533]
    non_outlier = [1.490, 1.745, 1.842, 1.855, 1.915, 1.958]
    assert [row["s"] for row in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [float(row["attn_emd_out"]) for row in rows] == outlier
    assert [float(row["attn_emd_non"]) for row in rows] == non_outlier
    assert all(row["backbone"] == "clip-l14-336" and row["holds"] == "yes" for row in rows)


def test_holds_column_applies_relation_and_tolerance():
    claim = Claim(id="t.toy", source="Table 6", table="table6", analysis="reconstruction", statement="toy",
                  backbones=("a", "b", "c"),
                  relation=Relation(a="fvu_o", op="<=", b="fvu_a"), tolerance=0.5,
                  paper_values={"a": {"fvu_o": 1.4, "fvu_a": 1.0}, "b": {"fvu_o": 1.6, "fvu_a": 1.0},
                                "c": {"fvu_o": 0.2}})
    rows = {row["backbone"]: row for row in parse_table(_section(render_claims([claim]), "t.toy"), "backbone")}
    assert rows["a"]["holds"] == "yes"  # 1.4 <= 1.0 + 0.5
    assert rows["b"]["holds"] == "NO"  # 1.6 > 1.0 + 0.5
    assert (rows["c"]["fvu_a"], rows["c"]["holds"]) == ("–", "–")
    assert render_claims([]) == "(no claims)"


def test_unknown_table_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["claims", "--table", "table99"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'table99'" in err and "'table6'" in err


def test_coverage_lists_source_claims_statements_and_backbones_within_120_columns(capsys, known_planted_miss):
    known_planted_miss("table3.cls-high-removal-improves", "the context barely misleads the probe")
    known_planted_miss("table6.outliers-fewer-latents", "batch-wide selection", ("batchtopk", "matryoshka"))
    code, out, _ = _cli(capsys, "claims", "--coverage")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 120
    rows = parse_table(out, "source")
    for row in rows:  # the claim cell: the id, then the paper's statement wrapped under it
        row["claim"], _, row["statement"] = row["claim"].partition("\n")
    assert sorted(row["claim"] for row in rows) == sorted(claim.id for claim in CLAIMS)
    by_id = dict(registry.CLAIMS_BY_ID)  # with the misses registered above
    for row in rows:
        claim = by_id[row["claim"]]
        assert row["source"] == claim.source
        assert " ".join(row["statement"].split()) == claim.statement
        assert tuple(row["backbones"].replace(",", " ").split()) == claim.backbones
        # what the planted default shows of it: expected to hold, a known miss for some SAEs, or not checked
        expected = "–" if PLANTED not in claim.backbones else "expected" if claim.planted_miss is None else \
            "known miss:\n" + (", ".join(claim.planted_miss.architectures or ()) or "every SAE")
        assert row["on planted"] == expected, claim.id
    assert rows[[r["claim"] for r in rows].index("table6.outliers-fewer-latents")]["on planted"] == \
        "known miss:\nbatchtopk, matryoshka"
    assert rows[[r["claim"] for r in rows].index("table6.outliers-reconstructed-better")]["on planted"] == "expected"
    assert rows[[r["claim"] for r in rows].index("table3.cls-high-removal-improves")]["on planted"] == \
        "known miss:\nevery SAE"
    sources = [row["source"] for row in rows]
    assert sources == sorted(sources, key=sources.index)  # grouped: each source's claims together
    assert rows[[r["claim"] for r in rows].index("table9.non-outlier-emd-rises-with-shift")]["backbones"] == \
        "clip-l14-336, planted"
    checks = sum(len(claim.backbones) for claim in CLAIMS)
    count = " ".join(out.rstrip().split("\n\n")[-1].splitlines())  # the count line, wrapped at 120 columns
    assert count == (f"{len(CLAIMS)} claims from {len(set(sources))} places in the paper, {checks} (claim, backbone) "
                     "checks on 12 of the paper's backbones and planted, planted-b, planted-l")
    _, table6, _ = _cli(capsys, "claims", "--coverage", "--table", "table6")
    assert [row["claim"].partition("\n")[0] for row in parse_table(table6, "source")] == [
        "table6.outliers-reconstructed-better", "table6.outliers-cosine-higher", "table6.outliers-fewer-latents"]


def test_paper_rows_of_the_new_relation_forms(capsys):
    _, out, _ = _cli(capsys, "claims")
    monotone = parse_table(_section(out, "table9.non-outlier-emd-rises-with-shift"), "backbone")
    # Supplement Table 9, non-outlier row: each shift's step from the one before
    assert [(row["s"], row["attn_emd_non"], row["holds"]) for row in monotone] == [
        ("1", "1.49", "–"), ("2", "1.745", "yes"), ("3", "1.842", "yes"), ("4", "1.855", "yes"), ("5", "1.915", "yes"),
        ("6", "1.958", "yes")]
    share = {row["backbone"]: row for row in parse_table(_section(out, "table4.high-cds-share-below-paper-max"),
                                                         "backbone")}
    assert share["clip-l14-336"]["high_share"] == f"{10445 / 32768:g}" and share["clip-l14-336"]["holds"] == "yes"
    far = parse_table(_section(out, "table7.outlier-emd-far-above"), "backbone")
    assert len(far) == 3 + 6 and {row["holds"] for row in far} == {"yes"}  # Table 7 at s=1, Table 9 at s=1..6
    summary = {row["id"]: row for row in parse_table(out, "id")}
    assert summary["table7.outlier-emd-far-above"]["relation"].replace("\n", " ") == \
        "attn_emd_out >= 1.914 x attn_emd_non for every s"
    assert summary["table4.high-cds-share-above-paper-min"]["relation"] == "high_share >= 0.148"


def test_holds_column_of_a_monotone_relation_fails_on_a_falling_step():
    claim = Claim(id="t.toy", source="Table 9", table="table9", analysis="attention_emd", statement="toy",
                  backbones=("a",), relation=Relation(a="attn_emd_non", op=">=", along="s"),
                  paper_values={"a": {"attn_emd_non[s=1]": 1.0, "attn_emd_non[s=2]": 0.5, "attn_emd_non[s=4]": 2.0}})
    rows = parse_table(_section(render_claims([claim]), "t.toy"), "backbone")
    assert [(row["s"], row["holds"]) for row in rows] == [("1", "–"), ("2", "NO"), ("4", "yes")]
