from __future__ import annotations

from pydantic import Field

from scopebench.analyses.base import AnalysisConfig


class ReconstructionConfig(AnalysisConfig):
    images: int = Field(gt=0, description="evaluation images whose patch tokens are reconstructed (Table 6); "
                                          "their norms also set tau when the backbone's tau is 'auto'")
    batch_images: int = Field(64, gt=0, description="images per encode batch (float32 kernels depend on batch shape)")
