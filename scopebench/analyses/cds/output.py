from __future__ import annotations

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


class CDSOutput(AnalysisOutput):
    gamma: Optional[float] = quantity("CDS threshold separating low- from high-CDS features (the paper's value "
                                      "where it gives one, else the valley of the CDS histogram)", "CDS",
                                      default=None)
    n_low: Optional[float] = quantity("number of features with CDS <= gamma", "features", default=None)
    n_high: Optional[float] = quantity("number of features with CDS > gamma", "features", default=None)
    n_dead_cds: Optional[float] = quantity("features without a CDS (never fire on the overlap, or no image with "
                                           "both views firing)", "features", default=None)

    histogram: Optional[CDSHistogram] = Field(None, description="the CDS histogram of Figure 6")
    no_partition: Optional[str] = Field(None, description="why there is no gamma (no significant valley in the CDS "
                                                          "histogram); None when the features were partitioned")

    DERIVED_COLUMNS: ClassVar[dict[str, Any]] = {"n_low/n_high": _groups}
    _details: Any = PrivateAttr(default=None)  # (CDSResult, Partition | None): arrays for plots, never stored

    @property
    def details(self) -> Any:
        return self._details
