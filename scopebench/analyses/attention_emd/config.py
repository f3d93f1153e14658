from __future__ import annotations

from pydantic import Field

from scopebench.analyses.base import AnalysisConfig


class AttentionEMDConfig(AnalysisConfig):
    images: int = Field(gt=0, description="SCC images whose attention maps are compared (paper: 1,000)")
    shifts: tuple[int, ...] = Field((1, 2, 3, 4, 5, 6), description="SCC shifts s in patches (Table 9: 1..6)")
    method: str = Field("exact", description="'exact' or 'sinkhorn' (see scopebench.emd)")
    batch_images: int = Field(16, gt=0, description="images per forward pass (attention maps are streamed, "
                                                    "never cached: [heads, N, N] per view)")
