"""NYU Depth v2 (labelled subset, 795 train / 654 test) exported to PNG files.

Layout: ``<root>/{train,test}/rgb/<name>.png`` (or ``.jpg``) and
``<root>/{train,test}/depth/<name>.png``: a 16-bit single-channel PNG of depth in
millimetres, 0 = no measurement.  Depth is returned in metres; 0 stays 0 ("invalid"
in :class:`~scopebench.data.base.Sample`).  This is the layout most NYUv2 export
scripts produce from ``nyu_depth_v2_labeled.mat`` (images, depths * 1000 as uint16).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scopebench.data.files import (DatasetLayoutError, MappedImages, dataset_identity, image_files, paired_maps,
                                   require_dir)

LAYOUT = ("<root>/{train,test}/rgb/<name>.png and <root>/{train,test}/depth/<name>.png "
          "(16-bit PNG, depth in millimetres, 0 = invalid)")
SPLITS = ("train", "test")
MILLIMETRES_PER_METRE = 1000.0


class NYUDepthV2(MappedImages):
    """NYUd split with per-pixel depth in metres."""

    layout, map_field, map_what, map_modes = LAYOUT, "depth", "depth map", ("I;16", "I;16B", "I;16L", "I")  # 16-bit

    def __init__(self, root: str | Path, split: str = "test") -> None:
        if split not in SPLITS:
            raise ValueError(f"NYUd split must be one of {SPLITS}, got {split!r}")
        self.root = require_dir(Path(root).expanduser(), "NYUd root folder", LAYOUT)
        self.split = split
        split_dir = require_dir(self.root / split, f"NYUd split folder {split!r}", LAYOUT)
        rgb_dir = require_dir(split_dir / "rgb", "NYUd rgb folder", LAYOUT)
        depth_dir = require_dir(split_dir / "depth", "NYUd depth folder", LAYOUT)
        self._images = image_files(rgb_dir)
        if not self._images:
            raise DatasetLayoutError("no images in the rgb folder", rgb_dir, LAYOUT)
        self._maps = paired_maps(self._images, depth_dir, "depth map", LAYOUT)
        self._identity = dataset_identity("nyud", split, self.root, self._images + self._maps)

    def _convert(self, index: int, raw: np.ndarray) -> torch.Tensor:
        if raw.min() < 0:
            raise DatasetLayoutError(f"negative depth value {int(raw.min())}", self._maps[index], LAYOUT)
        return torch.from_numpy(raw.astype(np.float32) / MILLIMETRES_PER_METRE)
