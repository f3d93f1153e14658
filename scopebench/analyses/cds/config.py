from __future__ import annotations

from pydantic import Field

from scopebench.analyses.base import AnalysisConfig


class CDSConfig(AnalysisConfig):
    images: int = Field(gt=0, description="SCC images whose overlap maps score every feature (paper: 1,000, one per "
                                          "ImageNet class); awCDS reads the same images")
    k: int = Field(gt=0, description="top-activating images per feature in the CDS mean")
    shift: int = Field(1, ge=1, description="SCC shift s in patches (paper: 1)")
    emd_method: str = Field("exact", description="'exact' or 'sinkhorn' (see scopebench.emd)")
