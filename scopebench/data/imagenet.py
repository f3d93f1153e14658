"""ImageNet-1K in the torchvision ImageFolder layout.

Layout: ``<root>/{train,val}/<wnid>/<name>.JPEG`` (``.jpg`` / ``.png`` also accepted).
The class index of an image is the position of its wnid among the sorted wnid folders of
``train`` (of the split itself when there is no ``train``), so a full ImageNet-1K tree gives
the standard 0..999 indices and both splits share them even if ``val`` lacks a class.  The
official validation archive is flat; sort it into wnid folders first (e.g. ``valprep.sh``).
"""
from __future__ import annotations

from pathlib import Path

from scopebench.data.base import Sample
from scopebench.data.files import DatasetLayoutError, dataset_identity, image_files, read_rgb, require_dir

LAYOUT = "<root>/{train,val}/<wnid>/*.JPEG (ImageFolder; class index = sorted wnid order)"
SPLITS = ("train", "val")


class ImageNet:
    """ImageNet-1K split as an :class:`~scopebench.data.base.ImageDataset` with image-level labels."""

    def __init__(self, root: str | Path, split: str = "val") -> None:
        if split not in SPLITS:
            raise ValueError(f"ImageNet split must be one of {SPLITS}, got {split!r}")
        self.root = require_dir(Path(root).expanduser(), "ImageNet root folder", LAYOUT)
        self.split = split
        split_dir = require_dir(self.root / split, f"ImageNet split folder {split!r}", LAYOUT)
        present = _wnid_folders(split_dir)
        if not present:
            raise DatasetLayoutError("no class (wnid) folders in the split folder", split_dir, LAYOUT)
        train_dir = self.root / "train"
        self.classes = _wnid_folders(train_dir) if split != "train" and train_dir.is_dir() else present
        unknown = sorted(set(present) - set(self.classes))
        if unknown:
            raise DatasetLayoutError(f"class folders {unknown[:5]} are not in the train split, so they have no "
                                     "class index; use the same wnid folders in both splits", split_dir, LAYOUT)
        index_of = {wnid: index for index, wnid in enumerate(self.classes)}
        self._files: list[Path] = []
        self._labels: list[int] = []
        for wnid in present:
            files = image_files(split_dir / wnid)
            if not files:
                raise DatasetLayoutError("class folder holds no images", split_dir / wnid, LAYOUT)
            self._files += files
            self._labels += [index_of[wnid]] * len(files)
        self._identity = dataset_identity("imagenet", split, self.root, self._files)

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def labels(self) -> list[int]:
        return list(self._labels)

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, index: int) -> Sample:
        return Sample(image=read_rgb(self._files[index], LAYOUT), label=self._labels[index])

    def target(self, index: int, field: str) -> int | None:
        """The item's ``field`` without decoding its image (:func:`scopebench.data.base.read_target`)."""
        return self._labels[index] if field == "label" else None


def _wnid_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir())
