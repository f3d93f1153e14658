from __future__ import annotations

from pydantic import Field

from scopebench.analyses.base import AnalysisConfig


class AwCDSConfig(AnalysisConfig):
    n_bins: int = Field(20, gt=0, description="equal-count token-norm percentile bins")
    top_fraction: float = Field(0.01, gt=0, lt=1, description="the extra top bin: this fraction of highest-norm "
                                                              "tokens (outliers are ~1-3% of tokens)")
