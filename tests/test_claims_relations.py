"""The relation forms of the claims registry (factor, constant bound, monotone, family) and their margins."""
from __future__ import annotations

import math

import pytest

from scopebench.analyses import AttentionEMDOutput, RemovalProbesOutput
from scopebench.analyses.attention_emd.output import ShiftEMD
from scopebench.backbones.registry import REGISTRY
from scopebench.claims.registry import (
    CLAIMS, Claim, FamilyClaim, Relation, check_all, claims_for, compared_keys, evaluate, family_claims, get_claim,
    size_series,
)
from scopebench.keys import indexed


def _claim(relation: Relation, tolerance: float = 0.0, analysis: str = "reconstruction") -> Claim:
    return Claim(id="t.x", source="test", table="t", analysis=analysis, statement="s", backbones=("planted",),
                 relation=relation, tolerance=tolerance)


@pytest.mark.parametrize(("op", "a", "b", "margin", "passed"), [
    (">=", 3.0, 1.5, 0.0, True),  # 3.0 >= 2 x 1.5 exactly: the boundary of a non-strict relation holds
    (">", 3.0, 1.5, 0.0, False),  # ... and fails a strict one
    (">=", 2.5, 1.5, -0.5, False),
    ("<=", 2.5, 1.5, 0.5, True),  # 2 x 1.5 - 2.5
    ("<", 3.5, 1.5, -0.5, False),
])
def test_factor_scales_b_and_the_margin_is_in_the_unit_of_a(op, a, b, margin, passed) -> None:
    verdict = evaluate(_claim(Relation(a="fvu_o", op=op, b="fvu_a", factor=2.0)), {"fvu_o": a, "fvu_a": b})
    assert verdict.passed is passed
    assert verdict.margin == margin  # exact: every operand is a small dyadic number
    assert f"fvu_o {op} 2 x fvu_a" in verdict.detail and "2 x fvu_a=1.5" in verdict.detail


def test_tolerance_enters_the_margin_towards_passing() -> None:
    claim = _claim(Relation(a="fvu_o", op=">=", b="fvu_a", factor=0.5), tolerance=0.25)
    verdict = evaluate(claim, {"fvu_o": 0.5, "fvu_a": 1.5})  # 0.5 >= 0.75 - 0.25
    assert verdict.passed and verdict.margin == 0.0
    verdict = evaluate(claim, {"fvu_o": 0.25, "fvu_a": 1.5})
    assert not verdict.passed and verdict.margin == -0.25


def test_constant_bound() -> None:
    claim = _claim(Relation(a="high_share", op=">=", b=0.25), analysis="cds")
    assert claim.quantities == ("high_share",) and claim.relation.text() == "high_share >= 0.25"
    held = evaluate(claim, {"high_share": 0.375})
    assert held.passed and held.margin == 0.125 and "high_share=0.375 >= 0.25" in held.detail
    missed = evaluate(claim, {"high_share": 0.125})
    assert not missed.passed and missed.margin == -0.125
    at_most = evaluate(_claim(Relation(a="high_share", op="<", b=0.25), analysis="cds"), {"high_share": 0.125})
    assert at_most.passed and at_most.margin == 0.125
    nan = evaluate(claim, {"high_share": math.nan})
    assert not nan.passed and math.isnan(nan.margin)
    with pytest.raises(ValueError, match="high_share"):
        evaluate(claim, {"n_low": 1.0})
    assert claims_for("cds", "clip-b16", {"n_low": 3.0, "n_high": 1.0}) == [get_claim("table4.high-cds-minority")]


def _series(values: list[float], name: str = "fvu_o") -> dict[str, float]:
    return {indexed(name, s): v for s, v in enumerate(values, start=1)}


def test_monotone_relation_checks_each_step_and_reports_the_worst() -> None:
    rising = _claim(Relation(a="fvu_o", op=">=", along="s"))
    assert rising.relation.text() == "fvu_o non-decreasing in s"
    held = evaluate(rising, _series([1.0, 1.5, 1.5, 2.0]))
    assert held.passed and held.margin == 0.0  # the flat step is the worst: it holds at 0
    missed = evaluate(rising, _series([1.0, 1.5, 1.25, 2.0]))
    assert not missed.passed and missed.margin == -0.25
    assert missed.detail.endswith("fails: fvu_o[s=3]=1.25 >= fvu_o[s=2]=1.5")  # only the failing step
    # the tolerance is per step: each step may go down by at most that much
    assert evaluate(_claim(rising.relation, tolerance=0.25), _series([1.0, 1.5, 1.25, 2.0])).passed
    assert not evaluate(_claim(rising.relation, tolerance=0.125), _series([1.0, 1.5, 1.25, 2.0])).passed
    falling = _claim(Relation(a="fvu_o", op="<=", along="s"))
    assert falling.relation.text() == "fvu_o non-increasing in s"
    assert evaluate(falling, _series([3.0, 2.0, 2.0])).passed
    assert evaluate(falling, _series([3.0, 2.0, 2.5])).margin == -0.5
    strict = _claim(Relation(a="fvu_o", op=">", along="s"))
    assert not evaluate(strict, _series([1.0, 1.0])).passed
    nan = evaluate(rising, _series([1.0, math.nan, 2.0]))
    assert not nan.passed and math.isnan(nan.margin)


def test_monotone_steps_follow_the_shifts_measured_not_their_order_in_the_mapping() -> None:
    claim = _claim(Relation(a="fvu_o", op=">=", along="s"))
    measured = {indexed("fvu_o", 6): 3.0, indexed("fvu_o", 1): 1.0, indexed("fvu_o", 3): 2.0, "fvu_a": 9.0}
    verdict = evaluate(claim, measured)
    assert verdict.passed and verdict.margin == 1.0
    assert compared_keys(claim, measured) == [indexed("fvu_o", 3), indexed("fvu_o", 1), indexed("fvu_o", 6)]


def test_monotone_relation_needs_two_index_values() -> None:
    claim = get_claim("table9.non-outlier-emd-rises-with-shift")
    one_shift = {indexed("attn_emd_non", 1): 0.5, indexed("attn_emd_out", 1): 5.0}
    with pytest.raises(ValueError, match="two or more values of s"):
        evaluate(claim, one_shift)
    assert claim not in claims_for("attention_emd", "clip-l14-336", one_shift)  # not measurable: not evaluated
    assert claim in claims_for("attention_emd", "clip-l14-336", one_shift | {indexed("attn_emd_non", 2): 0.75})


def test_relation_forms_are_refused_when_mixed() -> None:
    with pytest.raises(ValueError, match="monotone"):
        Relation(a="fvu_o", op=">=", b="fvu_a", along="s")
    with pytest.raises(ValueError, match="constant bound"):
        Relation(a="fvu_o", op=">=", b=0.5, factor=2.0)
    with pytest.raises(ValueError, match="give b"):
        Relation(a="fvu_o", op=">=")
    with pytest.raises(ValueError, match="factor must be a positive number"):
        Relation(a="fvu_o", op=">=", b="fvu_a", factor=0.0)
    with pytest.raises(ValueError, match="'nope' is not a quantity"):
        _claim(Relation(a="fvu_o", op=">=", b="nope"))
    with pytest.raises(ValueError, match="FamilyClaim"):
        _claim(Relation(a="fvu_o", op="<=", along="size"))


def test_new_claims_on_a_hand_built_attention_output() -> None:
    """Table 7's factor claim at every shift and Table 9's monotone claim, through check_all on one output."""
    def output(pairs: dict[int, tuple[float, float]]) -> AttentionEMDOutput:
        return AttentionEMDOutput(per_shift={s: ShiftEMD(outlier=o, non_outlier=n, n_outlier=4, n_non_outlier=40)
                                             for s, (o, n) in pairs.items()}, tau=10.0)

    good = output({1: (6.0, 1.0), 2: (6.5, 1.25), 3: (6.0, 1.5)})
    found = {c.id: v for c, v in check_all("attention_emd", good, "clip-l14-336")}
    assert set(found) == {"table7.outlier-emd-far-above", "table9.outlier-attention-unstable-every-shift",
                          "table9.non-outlier-emd-rises-with-shift"}
    assert all(v.passed for v in found.values())
    factor = get_claim("table7.outlier-emd-far-above").relation.factor
    assert found["table7.outlier-emd-far-above"].margin == pytest.approx(6.0 - factor * 1.5)  # worst: s=3
    assert found["table9.non-outlier-emd-rises-with-shift"].margin == pytest.approx(0.25)
    close = output({1: (6.0, 1.0), 2: (2.0, 1.5)})  # above the others at s=2, but not by the paper's factor
    found = {c.id: v for c, v in check_all("attention_emd", close, "clip-l14-336")}
    assert found["table9.outlier-attention-unstable-every-shift"].passed
    assert not found["table7.outlier-emd-far-above"].passed
    assert "attn_emd_out[s=2]=2" in found["table7.outlier-emd-far-above"].detail.split("fails:")[1]
    falling = output({1: (6.0, 1.5), 2: (6.0, 1.0)})
    assert not dict((c.id, v) for c, v in check_all("attention_emd", falling, "clip-l14-336"))[
        "table9.non-outlier-emd-rises-with-shift"].passed
    # dinov2-b is a Table 7 backbone, not a Table 9 one: only the factor claim (and Table 7's s=1 claim) apply
    assert {c.id for c, _ in check_all("attention_emd", good, "dinov2-b")} == {
        "table7.outlier-attention-unstable", "table7.outlier-emd-far-above"}


# -- family claims (Figure 8) -------------------------------------------------------------------------------------

GAP = get_claim("figure8.cls-low-removal-gap-narrows")


def _probes(original: float, low_removed: float) -> dict[str, float]:
    return RemovalProbesOutput(cls_top1_original=original, cls_top1_high_removed=original,
                               cls_top1_low_removed=low_removed).quantities()


def test_family_claim_holds_when_the_gap_narrows_with_size_and_fails_when_it_widens() -> None:
    assert isinstance(GAP, FamilyClaim) and GAP.families["dinov2"] == ("dinov2-b", "dinov2-l", "dinov2-g")
    narrowing = {"dinov2-g": _probes(86.0, 84.0), "dinov2-b": _probes(80.0, 70.0), "dinov2-l": _probes(84.0, 78.0)}
    series = size_series(GAP, "dinov2", narrowing)
    assert series == {"cls_top1_low_removal_gap[size=0]": 10.0, "cls_top1_low_removal_gap[size=1]": 6.0,
                      "cls_top1_low_removal_gap[size=2]": 2.0}
    verdict = evaluate(GAP, series)
    assert verdict.passed and verdict.margin == 4.0  # both steps shrink by 4 points
    widening = narrowing | {"dinov2-g": _probes(86.0, 79.0)}  # gap 7 > 6
    verdict = evaluate(GAP, size_series(GAP, "dinov2", widening))
    assert not verdict.passed and verdict.margin == -1.0
    two_sizes = evaluate(GAP, size_series(GAP, "dinov2", {"dinov2-b": _probes(80.0, 70.0),
                                                          "dinov2-g": _probes(86.0, 84.0)}))
    assert two_sizes.passed and two_sizes.margin == 8.0  # a missing size: the sizes measured, in order
    with pytest.raises(ValueError, match="two or more values of size"):
        evaluate(GAP, size_series(GAP, "planted", {"planted": _probes(80.0, 20.0)}))
    with pytest.raises(ValueError, match="not sizes of dinov2"):
        size_series(GAP, "dinov2", {"deit3-b": _probes(80.0, 70.0)})
    with pytest.raises(KeyError, match="not 'clip'"):
        size_series(GAP, "clip", {})


def test_family_claims_are_never_evaluated_on_one_output() -> None:
    assert GAP not in claims_for("removal_probes", "dinov2-b", _probes(80.0, 70.0))
    assert family_claims("removal_probes", "deit3") == [GAP] and family_claims("removal_probes", "clip") == []
    assert family_claims("reconstruction", "deit3") == []


def test_families_follow_the_backbone_registry_in_size_order() -> None:
    for family, names in GAP.families.items():
        assert names == tuple(n for n, spec in REGISTRY.items() if spec.family == family), family
    assert set(GAP.backbones) == {n for names in GAP.families.values() for n in names}


def test_every_claim_form_is_in_the_registry() -> None:
    """The forms above are not only supported: the paper's claims use each of them."""
    relations = [c.relation for c in CLAIMS]
    assert any(r.factor != 1.0 and r.for_every == "s" for r in relations)
    assert any(r.is_constant for r in relations)
    assert any(r.along == "s" for r in relations)
    assert any(isinstance(c, FamilyClaim) for c in CLAIMS)


def test_backbones_of_several_tables_is_their_union() -> None:
    from scopebench.claims.registry import backbones_of

    assert set(backbones_of("table4", "figure6")) == set(backbones_of("table4")) | set(backbones_of("figure6"))
    assert set(backbones_of("figure6")) == {"dinov2-b", "deit3-b", "siglip2-b", "clip-b16", "clip-l14",
                                            "clip-l14-336", "planted"}
    with pytest.raises(KeyError, match="no claim comes from 'table99'"):
        backbones_of("table99")


def test_a_family_claim_must_cover_its_families_backbones() -> None:
    with pytest.raises(ValueError, match="not among them: dinov2-g"):
        FamilyClaim(id="f.x", source="s", table="f", analysis="removal_probes", statement="s",
                    families={"dinov2": ("dinov2-b", "dinov2-g")}, backbones=("dinov2-b",),
                    relation=Relation(a="cls_top1_low_removal_gap", op="<=", along="size"))
