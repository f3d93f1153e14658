from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from scopebench.analyses.base import AnalysisOutput
from scopebench.keys import indexed


class ShiftEMD(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    outlier: float = Field(description="mean attention EMD of outlier queries, patch units")
    non_outlier: float = Field(description="mean attention EMD of non-outlier queries, patch units")
    n_outlier: int = Field(description="(image, head, query) rows of outlier queries averaged")
    n_non_outlier: int = Field(description="(image, head, query) rows of non-outlier queries averaged")


class AttentionEMDOutput(AnalysisOutput):
    per_shift: dict[int, ShiftEMD] = Field(default_factory=dict, description="SCC shift s -> its EMD means")
    tau: float | None = Field(None, description="outlier threshold on view A's token norm (L2 norm)")

    INDEXED_QUANTITIES: ClassVar[dict[str, tuple[str, str, str | None]]] = {
        "attn_emd_out": ("mean attention EMD of outlier queries under SCC(s), over the overlap, in content "
                         "coordinates", "patch units", "EMD out (s=1)"),
        "attn_emd_non": ("mean attention EMD of non-outlier queries under SCC(s)", "patch units", "EMD non (s=1)"),
    }

    def quantities(self) -> dict[str, float]:
        found = {}
        for s, emd in sorted(self.per_shift.items()):
            found[indexed("attn_emd_out", s)] = emd.outlier
            found[indexed("attn_emd_non", s)] = emd.non_outlier
        return found

    def merged_over(self, old: AnalysisOutput) -> AttentionEMDOutput:
        assert isinstance(old, AttentionEMDOutput)
        return AttentionEMDOutput(per_shift={**old.per_shift, **self.per_shift}, tau=self.tau)
