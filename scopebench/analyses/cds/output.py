from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from scopebench.analyses.base import AnalysisOutput, quantity


def _groups(q: dict[str, float]) -> str | None:
    if "n_low" not in q or "n_high" not in q:
        return None
    return f"{q['n_low']:.0f}/{q['n_high']:.0f}"


class CDSHistogram(BaseModel):
    """Figure 6 as data: counts of the scored features' CDS in equal-width bins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    edges: list[float] = Field(description="bin edges (one more than counts), CDS units")
    counts: list[int]


def high_cds_share(values: Mapping[str, Any]) -> float | None:
    """``n_high / (n_low + n_high)``: NaN without a partition (NaN counts) or without a scored feature."""
    n_low, n_high = values.get("n_low"), values.get("n_high")
    if n_low is None or n_high is None:
        return None
    total = n_low + n_high
    return n_high / total if total > 0 else math.nan


def _mode_shape(values: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """(low peak, high peak, valley depth) of the CDS histogram split at gamma; None without a histogram.

    A bin belongs to the low mode when its centre is <= gamma, else to the high mode; a mode's peak is its
    tallest bin. The valley depth is ``1 - floor / min(peaks)``, ``floor`` the smallest bin from the low peak
    to the high peak (both included): 0 when the peaks are adjacent or nothing dips between them, 1 when an
    empty bin separates them; 0 too when one side has no feature at all (no second mode to separate).
    """
    histogram, gamma = values.get("histogram"), values.get("gamma")
    if histogram is None or gamma is None:
        return None
    if not math.isfinite(gamma):
        return math.nan, math.nan, math.nan
    histogram = CDSHistogram.model_validate(histogram)
    counts = histogram.counts
    centres = [(lo + hi) / 2 for lo, hi in zip(histogram.edges, histogram.edges[1:])]
    low = [i for i, c in enumerate(centres) if c <= gamma]
    high = [i for i, c in enumerate(centres) if c > gamma]
    if not low or not high:
        return float(max((counts[i] for i in low), default=0)), float(max((counts[i] for i in high), default=0)), 0.0
    at_low, at_high = max(low, key=counts.__getitem__), max(high, key=counts.__getitem__)
    peak_low, peak_high = counts[at_low], counts[at_high]
    lower_peak = min(peak_low, peak_high)
    if lower_peak == 0:
        return float(peak_low), float(peak_high), 0.0
    return float(peak_low), float(peak_high), 1.0 - min(counts[at_low:at_high + 1]) / lower_peak


def _shape_part(i: int):
    def read(values: Mapping[str, Any]) -> float | None:
        shape = _mode_shape(values)
        return None if shape is None else shape[i]
    return read


class CDSOutput(AnalysisOutput):
    gamma: Optional[float] = quantity("CDS threshold separating low- from high-CDS features (the paper's value "
                                      "where it gives one, else the valley of the CDS histogram)", "CDS",
                                      default=None)
    n_low: Optional[float] = quantity("number of features with CDS <= gamma", "features", default=None)
    n_high: Optional[float] = quantity("number of features with CDS > gamma", "features", default=None)
    high_share: Optional[float] = quantity("share of the partitioned features that are high-CDS, n_high / (n_low + "
                                           "n_high) (NaN without a partition)", "unitless", default=None)
    cds_peak_low: Optional[float] = quantity("tallest bin of the CDS histogram at or below gamma (bin centre <= "
                                             "gamma): the low-CDS mode's peak", "features", default=None)
    cds_peak_high: Optional[float] = quantity("tallest bin of the CDS histogram above gamma: the high-CDS mode's peak",
                                              "features", default=None)
    cds_valley_depth: Optional[float] = quantity(
        "1 - (smallest CDS-histogram bin from the low peak to the high peak) / (the lower peak): 0 no dip between "
        "the modes, 1 an empty bin separates them", "unitless", default=None)
    n_dead_cds: Optional[float] = quantity("features without a CDS (never fire on the overlap, or no image with "
                                           "both views firing)", "features", default=None)

    histogram: Optional[CDSHistogram] = Field(None, description="the CDS histogram of Figure 6")
    no_partition: Optional[str] = Field(None, description="why there is no gamma (no significant valley in the CDS "
                                                          "histogram); None when the features were partitioned")

    DERIVED_COLUMNS: ClassVar[dict[str, Any]] = {"n_low/n_high": _groups}
    DERIVED: ClassVar[dict[str, Any]] = {"high_share": high_cds_share, "cds_peak_low": _shape_part(0),
                                         "cds_peak_high": _shape_part(1), "cds_valley_depth": _shape_part(2)}
    _details: Any = PrivateAttr(default=None)  # (CDSResult, Partition | None): arrays for plots, never stored

    @property
    def details(self) -> Any:
        return self._details
