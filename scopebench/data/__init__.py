"""Image datasets: the contract, synthetic scenes, real-dataset loaders and sampling views."""
from __future__ import annotations

from scopebench.data.ade20k import ADE20K
from scopebench.data.base import ImageDataset, Sample
from scopebench.data.files import DatasetLayoutError
from scopebench.data.imagenet import ImageNet
from scopebench.data.nyud import NYUDepthV2
from scopebench.data.subsets import Subset, one_per_class, subset
from scopebench.data.scenes import SyntheticScenes

__all__ = ["ADE20K", "DatasetLayoutError", "ImageDataset", "ImageNet", "NYUDepthV2", "Sample", "Subset",
           "SyntheticScenes", "one_per_class", "subset"]
