from __future__ import annotations

from typing import Any, Optional

from pydantic import PrivateAttr

from scopebench.analyses.base import AnalysisOutput, quantity


class AwCDSOutput(AnalysisOutput):
    awcds_top_bin: Optional[float] = quantity("mean awCDS of the top token-norm bin (top_fraction of tokens)", "CDS",
                                              default=None)
    awcds_median_bin: Optional[float] = quantity("mean awCDS of the token-norm percentile bin holding the median",
                                                 "CDS", default=None)
    _details: Any = PrivateAttr(default=None)  # the per-bin table (pandas) for the Figure 7 plot, never stored

    @property
    def details(self) -> Any:
        return self._details
