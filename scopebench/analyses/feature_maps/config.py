from __future__ import annotations

from pydantic import Field

from scopebench.analyses.base import AnalysisConfig


class FeatureMapsConfig(AnalysisConfig):
    n_features: int = Field(6, gt=0, description="features drawn per group: the lowest- and the highest-CDS ones "
                                                 "among those firing on n_images images or more")
    n_images: int = Field(4, gt=0, le=16, description="top-activating images per feature (the paper shows a few)")
    thumbnail: int = Field(32, ge=8, le=256, description="side in pixels of the stored image under each map")
