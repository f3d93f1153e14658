from __future__ import annotations

import base64
import io
from typing import Literal, Optional

import numpy as np
from PIL import Image

from pydantic import BaseModel, ConfigDict, Field

from scopebench.analyses.base import AnalysisOutput, quantity


class FeatureMapPanel(BaseModel):
    """One feature on its top images: view-A activation maps over the SCC overlap and the pixels under them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: Literal["low", "high"]
    feature: int
    cds: float
    images: list[int] = Field(description="dataset index of each top image")
    maps: list[list[list[float]]] = Field(description="[image][row][col] activation on the overlap, view A")
    thumbnails: list[str] = Field(description="[image] the overlap's pixels in view A, a base64 PNG")

    def thumbnail_pixels(self) -> np.ndarray:
        """The thumbnails decoded: ``[image, H, W, 3]`` in [0, 1] (what Figures 9-10 draw the maps over)."""
        return np.array([np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"), dtype=np.float64)
                         for png in self.thumbnails]) / 255.0


class FeatureMapsOutput(AnalysisOutput):
    view_tv_low: Optional[float] = quantity(
        "mean total variation between the two SCC views' normalised activation maps of the lowest-CDS features "
        "(0: the map follows content exactly)", "TV", default=None)
    view_tv_high: Optional[float] = quantity(
        "the same view disagreement for the highest-CDS features", "TV", default=None)
    panels: list[FeatureMapPanel] = Field(default_factory=list, description="the drawn features (Figures 9, 10)")
