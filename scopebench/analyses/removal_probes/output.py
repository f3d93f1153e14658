from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Optional

from scopebench.analyses.base import AnalysisOutput, quantity

_SCORE = {"cls_top1": ("linear-probe top-1 accuracy", "percent"), "seg_miou": ("linear-probe segmentation mIoU",
                                                                               "percent"),
          "depth_rmse": ("linear-probe depth RMSE", "depth unit")}
_EMBEDDING = {"original": "original tokens", "high_removed": "high-CDS features removed",
              "low_removed": "low-CDS features removed"}


def _delta(score: str, variant: str):
    def read(q: dict[str, float]) -> float | None:
        removed, original = q.get(f"{score}_{variant}_removed"), q.get(f"{score}_original")
        return None if removed is None or original is None else removed - original
    return read


def _field(score: str, embedding: str) -> Any:
    text, unit = _SCORE[score]
    return quantity(f"{text}, {_EMBEDDING[embedding]}", unit, default=None)


def low_removal_gap(values: Mapping[str, Any]) -> float | None:
    """``cls_top1_original - cls_top1_low_removed``: the accuracy that removing the low-CDS features costs."""
    delta = _delta("cls_top1", "low")(values)
    return None if delta is None else -delta


def _gain(score: str, removal: str, end: str | None = None) -> Any:
    """A removal's gain (removed - original) or one end ("lower" / "upper") of its bootstrap interval."""
    if end is None:
        return quantity(f"{_SCORE[score][0]} gain with {_EMBEDDING[removal]} (removed - original)", "percent points",
                        default=None)
    return quantity(f"{end} end of the paired-bootstrap percentile interval over test images of "
                    f"{score.split('_')[0]}_gain_{removal} (confidence: the config's bootstrap.confidence)",
                    "percent points", default=None)


class RemovalProbesOutput(AnalysisOutput):
    """Probe scores on the task's test split; a task that was not run stays null.

    The classification and segmentation gains come with a paired-bootstrap interval over the
    test images (:mod:`scopebench.probes.bootstrap`): sampling of the test set only, not of
    probe training.
    """

    cls_top1_original: Optional[float] = _field("cls_top1", "original")
    cls_top1_high_removed: Optional[float] = _field("cls_top1", "high_removed")
    cls_top1_low_removed: Optional[float] = _field("cls_top1", "low_removed")
    seg_miou_original: Optional[float] = _field("seg_miou", "original")
    seg_miou_high_removed: Optional[float] = _field("seg_miou", "high_removed")
    seg_miou_low_removed: Optional[float] = _field("seg_miou", "low_removed")
    depth_rmse_original: Optional[float] = _field("depth_rmse", "original")
    depth_rmse_high_removed: Optional[float] = _field("depth_rmse", "high_removed")
    depth_rmse_low_removed: Optional[float] = _field("depth_rmse", "low_removed")
    cls_top1_low_removal_gap: Optional[float] = quantity(
        "top-1 accuracy lost by removing the low-CDS features, cls_top1_original - cls_top1_low_removed (Figure 8's "
        "gap)", "percent", default=None)
    cls_gain_high_removed: Optional[float] = _gain("cls_top1", "high_removed")
    cls_gain_high_removed_lo: Optional[float] = _gain("cls_top1", "high_removed", "lower")
    cls_gain_high_removed_hi: Optional[float] = _gain("cls_top1", "high_removed", "upper")
    cls_gain_low_removed: Optional[float] = _gain("cls_top1", "low_removed")
    cls_gain_low_removed_lo: Optional[float] = _gain("cls_top1", "low_removed", "lower")
    cls_gain_low_removed_hi: Optional[float] = _gain("cls_top1", "low_removed", "upper")
    seg_gain_high_removed: Optional[float] = _gain("seg_miou", "high_removed")
    seg_gain_high_removed_lo: Optional[float] = _gain("seg_miou", "high_removed", "lower")
    seg_gain_high_removed_hi: Optional[float] = _gain("seg_miou", "high_removed", "upper")
    seg_gain_low_removed: Optional[float] = _gain("seg_miou", "low_removed")
    seg_gain_low_removed_lo: Optional[float] = _gain("seg_miou", "low_removed", "lower")
    seg_gain_low_removed_hi: Optional[float] = _gain("seg_miou", "low_removed", "upper")

    DERIVED: ClassVar[dict[str, Any]] = {"cls_top1_low_removal_gap": low_removal_gap}

    #: (removed) - (original) in the probe's unit
    DERIVED_COLUMNS: ClassVar[dict[str, Any]] = {
        f"Δ{short} {variant[:2]}": _delta(score, variant)
        for score, short in (("cls_top1", "cls"), ("seg_miou", "seg"), ("depth_rmse", "depth"))
        for variant in ("high", "low")
    }
