"""ADE20K scene parsing (SceneParsing challenge release, 150 classes).

Layout: ``<root>/ADEChallengeData2016/{images,annotations}/{training,validation}/``
(``root`` may also be the ``ADEChallengeData2016`` folder itself), image ``<name>.jpg``
with annotation ``<name>.png`` (8-bit, one value per pixel).

Annotation values: 0 = "other" (not one of the 150 classes) and is mapped to the
ignore value :data:`IGNORE_INDEX` = -1; values 1..150 map to classes 0..149.  Any
other value is an error.  Splits: ``"train"`` / ``"training"`` and ``"val"`` / ``"validation"``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scopebench.data.files import (DatasetLayoutError, MappedImages, dataset_identity, image_files, paired_maps,
                                   require_dir)

LAYOUT = ("<root>/ADEChallengeData2016/{images,annotations}/{training,validation}/ "
          "with images/<split>/<name>.jpg and annotations/<split>/<name>.png (8-bit, 0 = other, 1..150 = classes)")
SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}
N_CLASSES = 150
IGNORE_INDEX = -1


class ADE20K(MappedImages):
    """ADE20K split with per-pixel labels in ``0..149`` and :data:`IGNORE_INDEX` for "other"."""

    layout, map_field, map_what, map_modes = LAYOUT, "segmentation", "annotation", ("L", "P")  # 8-bit PNGs

    def __init__(self, root: str | Path, split: str = "val") -> None:
        if split not in SPLITS:
            raise ValueError(f"ADE20K split must be one of {tuple(SPLITS)}, got {split!r}")
        given = require_dir(Path(root).expanduser(), "ADE20K root folder", LAYOUT)
        base = given if given.name == "ADEChallengeData2016" else given / "ADEChallengeData2016"
        require_dir(base, "ADEChallengeData2016 folder", LAYOUT)
        self.root = given
        folder = SPLITS[split]
        self.split = folder
        image_dir = require_dir(base / "images" / folder, f"ADE20K image folder for split {split!r}", LAYOUT)
        label_dir = require_dir(base / "annotations" / folder, f"ADE20K annotation folder for split {split!r}",
                                LAYOUT)
        self._images = image_files(image_dir)
        if not self._images:
            raise DatasetLayoutError("no images in the split folder", image_dir, LAYOUT)
        self._maps = paired_maps(self._images, label_dir, "annotation", LAYOUT)
        self._identity = dataset_identity("ade20k", folder, given, self._images + self._maps)

    def _convert(self, index: int, raw: np.ndarray) -> torch.Tensor:
        if raw.max() > N_CLASSES:
            raise DatasetLayoutError(f"annotation value {int(raw.max())} exceeds {N_CLASSES}", self._maps[index], LAYOUT)
        return torch.from_numpy(raw.astype(np.int64) - 1)  # 0 ("other") becomes IGNORE_INDEX = -1
