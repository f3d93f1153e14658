"""Factors and bounds the claims take from the paper, recomputed here from the paper's text."""
from __future__ import annotations

import pytest
from test_claims import DESIGN, SUPPLEMENT, _design_table3, _supplement_tables

from scopebench.claims.registry import HIGH_REMOVAL_CLOSE, PAPER_BOUNDS, evaluate, get_claim

needs_text = pytest.mark.skipif(not (SUPPLEMENT.exists() and DESIGN.exists()),
                                reason="paper supplement text or DESIGN.md not available")

NEW_CLAIMS_WITH_PAPER_ROWS = {  # claim id -> paper rows (backbones) it is checked on
    "table6.outliers-fewer-latents": 12,
    "table4.high-cds-share-above-paper-min": 3,
    "table4.high-cds-share-below-paper-max": 3,
    "table7.outlier-emd-far-above": 4,
    "table9.non-outlier-emd-rises-with-shift": 1,
    "table8.seg-high-removal-close": 5,
    "table8.depth-high-removal-close": 5,
    "table8.seg-low-removal-clearly-below": 5,
    "table8.depth-low-removal-clearly-above": 5,
}


@pytest.fixture(scope="module")
def text_tables() -> dict[str, dict[str, dict[str, float]]]:
    return _supplement_tables() | {"table3": _design_table3()}


def _ratios(rows: dict[str, dict[str, float]], a: str, b: str) -> list[float]:
    out = []
    for values in rows.values():
        out += [v / values[k.replace(a, b)] for k, v in values.items() if k.startswith(a)]
    return out


def _rounded(bound: float, extreme: float, direction: str) -> None:
    """``bound`` is ``extreme`` rounded to 3 decimals in ``direction`` (never past the paper's own row)."""
    if direction == "down":
        assert bound <= extreme < bound + 1e-3 + 1e-12
    else:
        assert bound - 1e-3 - 1e-12 < extreme <= bound


@needs_text
def test_bounds_recomputed_from_the_supplement_text(text_tables) -> None:
    t = text_tables
    emd = min(_ratios(t["table7"], "attn_emd_out", "attn_emd_non") + _ratios(t["table9"], "attn_emd_out",
                                                                             "attn_emd_non"))
    assert emd == pytest.approx(7.18 / 3.75)  # SigLIP2-B, Table 7
    _rounded(PAPER_BOUNDS["emd_out_over_non"], emd, "down")
    shares = [row["n_high"] / (row["n_low"] + row["n_high"]) for row in t["table4"].values()]
    _rounded(PAPER_BOUNDS["high_share_min"], min(shares), "down")
    _rounded(PAPER_BOUNDS["high_share_max"], max(shares), "up")
    assert min(shares) == pytest.approx(4881 / 32768) and max(shares) == pytest.approx(10445 / 32768)
    dense = t["table3"] | t["table8"]
    seg = max(row["seg_miou_low_removed"] / row["seg_miou_original"] for row in dense.values())
    depth = min(row["depth_rmse_low_removed"] / row["depth_rmse_original"] for row in dense.values())
    assert seg == pytest.approx(15.47 / 25.26) and depth == pytest.approx(0.9481 / 0.8841)  # DINOv2-B, CLIP-B/16
    _rounded(PAPER_BOUNDS["seg_low_over_original"], seg, "up")
    _rounded(PAPER_BOUNDS["depth_low_over_original"], depth, "down")
    # the claims use these numbers
    assert get_claim("table7.outlier-emd-far-above").relation.factor == PAPER_BOUNDS["emd_out_over_non"]
    assert get_claim("table4.high-cds-share-above-paper-min").relation.b == PAPER_BOUNDS["high_share_min"]
    assert get_claim("table4.high-cds-share-below-paper-max").relation.b == PAPER_BOUNDS["high_share_max"]
    assert get_claim("table8.seg-low-removal-clearly-below").relation.factor == PAPER_BOUNDS["seg_low_over_original"]
    assert get_claim("table8.depth-low-removal-clearly-above").relation.factor == \
        PAPER_BOUNDS["depth_low_over_original"]


@needs_text
def test_close_band_lies_between_the_papers_high_and_low_removal_effects(text_tables) -> None:
    """'Close' (high-CDS removal) must admit every paper row and exclude the mildest low-CDS removal."""
    dense = text_tables["table3"] | text_tables["table8"]
    harm = max(max(1 - row["seg_miou_high_removed"] / row["seg_miou_original"],
                   row["depth_rmse_high_removed"] / row["depth_rmse_original"] - 1) for row in dense.values())
    mildest_low = min(min(1 - row["seg_miou_low_removed"] / row["seg_miou_original"],
                          row["depth_rmse_low_removed"] / row["depth_rmse_original"] - 1) for row in dense.values())
    assert harm == pytest.approx(1 - 26.26 / 26.48, rel=0.05)  # about 0.8%
    assert harm < HIGH_REMOVAL_CLOSE < mildest_low
    assert get_claim("table8.seg-high-removal-close").relation.factor == 1 - HIGH_REMOVAL_CLOSE
    assert get_claim("table8.depth-high-removal-close").relation.factor == 1 + HIGH_REMOVAL_CLOSE


def test_the_papers_numbers_satisfy_every_new_claim_with_a_margin_of_the_right_sign() -> None:
    for claim_id, rows in NEW_CLAIMS_WITH_PAPER_ROWS.items():
        claim = get_claim(claim_id)
        checked = {b: v for b, v in claim.paper_values.items() if v}
        assert len(checked) == rows, claim_id
        for backbone, values in checked.items():
            verdict = evaluate(claim, values)
            assert verdict.passed and verdict.margin >= 0, (claim_id, backbone, verdict.detail)
    # the extreme rows sit just inside their bounds, by less than the rounding
    far_above = evaluate(get_claim("table7.outlier-emd-far-above"), get_claim("table7.outlier-emd-far-above")
                         .paper_values["siglip2-b"])
    assert 0 <= far_above.margin < 1e-3 * 3.75
    monotone = evaluate(get_claim("table9.non-outlier-emd-rises-with-shift"),
                        get_claim("table9.non-outlier-emd-rises-with-shift").paper_values["clip-l14-336"])
    assert monotone.margin == pytest.approx(1.855 - 1.842)  # Table 9's smallest step, s=3 -> 4

