from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from scopebench.analyses.base import AnalysisOutput, quantity


class NormBin(BaseModel):
    """One token-norm percentile bin of Figure 7."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bin: str  # its label ("top 1%" for the top bin)
    pct_lo: float
    pct_hi: float
    mean_awcds: Optional[float] = Field(description="over the bin's scored tokens; None when it has none")
    is_top: bool = Field(description="the extra bin of the top_fraction highest-norm tokens")


class AwCDSOutput(AnalysisOutput):
    awcds_top_bin: Optional[float] = quantity("mean awCDS of the top token-norm bin (top_fraction of tokens)", "CDS",
                                              default=None)
    awcds_median_bin: Optional[float] = quantity("mean awCDS of the token-norm percentile bin holding the median",
                                                 "CDS", default=None)
    curve: list[NormBin] = Field(default_factory=list, description="mean awCDS per token-norm bin (Figure 7)")
    _details: Any = PrivateAttr(default=None)  # the per-bin table (pandas) for the Figure 7 plot, never stored

    @property
    def details(self) -> Any:
        return self._details
