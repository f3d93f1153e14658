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

from scopebench.data.base import Sample
from scopebench.data.files import (DatasetLayoutError, ScannedImages, dataset_identity, image_files, image_size,
                                   paired_maps, read_image_and_map, read_matching_map, require_dir)

LAYOUT = ("<root>/{train,test}/rgb/<name>.png and <root>/{train,test}/depth/<name>.png "
          "(16-bit PNG, depth in millimetres, 0 = invalid)")
SPLITS = ("train", "test")
MILLIMETRES_PER_METRE = 1000.0
MAP_MODES = ("I;16", "I;16B", "I;16L", "I")  # 16-bit depth PNGs


class NYUDepthV2(ScannedImages):
    """NYUd split with per-pixel depth in metres."""

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
        self._depths = paired_maps(self._images, depth_dir, "depth map", LAYOUT)
        self._identity = dataset_identity("nyud", split, self.root, self._images + self._depths)

    def __getitem__(self, index: int) -> Sample:
        image, raw = read_image_and_map(self._images[index], self._depths[index], LAYOUT, MAP_MODES, "depth map")
        return Sample(image=image, depth=self._depth(index, raw))

    def target(self, index: int, field: str) -> torch.Tensor | None:
        """The item's ``field`` without decoding its image (:func:`scopebench.data.base.read_target`)."""
        if field != "depth":
            return None
        size = image_size(self._images[index], LAYOUT)
        return self._depth(index, read_matching_map(self._depths[index], size, LAYOUT, MAP_MODES, "depth map"))

    def _depth(self, index: int, raw: np.ndarray) -> torch.Tensor:
        if raw.min() < 0:
            raise DatasetLayoutError(f"negative depth value {int(raw.min())}", self._depths[index], LAYOUT)
        return torch.from_numpy(raw.astype(np.float32) / MILLIMETRES_PER_METRE)
