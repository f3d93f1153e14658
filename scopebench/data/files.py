"""File-level helpers shared by the real-dataset loaders: layout errors, image reading, identity.

Every loader scans its tree once at construction and fails early with a
:class:`DatasetLayoutError` that names the offending path and the layout it expected,
so a misplaced folder is fixed in one step instead of surfacing deep inside a run.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from scopebench.data.base import Sample

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class DatasetLayoutError(FileNotFoundError):
    """A dataset tree does not match the layout a loader expects (or a file in it is unreadable)."""

    def __init__(self, problem: str, path: Path | str, expected: str) -> None:
        self.problem = problem
        self.path = Path(path)
        self.expected = expected
        super().__init__(f"{problem}: {self.path}\n  expected layout: {expected}")


def require_dir(path: Path, what: str, expected: str) -> Path:
    if not path.is_dir():
        raise DatasetLayoutError(f"missing {what}", path, expected)
    return path


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (suffix match is case-insensitive)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _open(path: Path, expected: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DatasetLayoutError(f"unreadable image file ({err.__class__.__name__}: {err})", path, expected) from err
    return image


def read_rgb(path: Path, expected: str) -> torch.Tensor:
    """``[3, H, W]`` float image in ``[0, 1]``."""
    array = np.asarray(_open(path, expected).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def read_map(path: Path, expected: str, modes: tuple[str, ...]) -> np.ndarray:
    """Raw values of a single-channel map (label PNG, 16-bit depth PNG) whose PIL mode is in ``modes``."""
    image = _open(path, expected)
    if image.mode not in modes:
        raise DatasetLayoutError(f"map has PIL mode {image.mode!r}, expected one of {modes}", path, expected)
    return np.asarray(image)


class ScannedImages:
    """``identity`` and ``len`` of a loader that set ``_images`` and ``_identity`` when it scanned its tree."""

    _images: list[Path]
    _identity: str

    @property
    def identity(self) -> str:
        return self._identity

    def __len__(self) -> int:
        return len(self._images)


class MappedImages(ScannedImages):
    """A scanned loader whose images each have one dense map (a label or depth PNG of the image's size).

    ``__getitem__`` returns the map as the sample's ``map_field``; ``target`` reads it without decoding the
    image (:func:`scopebench.data.base.read_target`).  A subclass sets ``_maps`` beside ``_images`` when it
    scans, the class attributes below, and ``_convert`` (the map's raw values -> the sample's tensor, raising
    :class:`DatasetLayoutError` on a value the dataset never holds).
    """

    _maps: list[Path]
    layout: ClassVar[str]  # the layout named by every DatasetLayoutError
    map_field: ClassVar[str]  # the Sample field the map fills
    map_what: ClassVar[str]  # how errors name the map
    map_modes: ClassVar[tuple[str, ...]]  # the PIL modes a map may have

    def _convert(self, index: int, raw: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        image = read_rgb(self._images[index], self.layout)
        return Sample(image=image, **{self.map_field: self._map(index, tuple(image.shape[1:]))})

    def target(self, index: int, field: str) -> torch.Tensor | None:
        if field != self.map_field:
            return None
        return self._map(index, image_size(self._images[index], self.layout))

    def _map(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        path = self._maps[index]
        raw = read_map(path, self.layout, modes=self.map_modes)
        if raw.shape != tuple(size):
            raise DatasetLayoutError(f"{self.map_what} size {raw.shape} differs from image size {tuple(size)}", path,
                                     self.layout)
        return self._convert(index, raw)


def paired_maps(images: list[Path], folder: Path, what: str, expected: str) -> list[Path]:
    """``folder/<stem>.png`` for each image, failing early on the first image that has none (``what`` names it)."""
    maps = [folder / f"{p.stem}.png" for p in images]
    for image, path in zip(images, maps):
        if not path.is_file():
            raise DatasetLayoutError(f"image {image.name} has no {what}", path, expected)
    return maps


def image_size(path: Path, expected: str) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header, without decoding its pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DatasetLayoutError(f"unreadable image file ({err.__class__.__name__}: {err})", path, expected) from err
    return height, width


def dataset_identity(name: str, split: str, root: Path, files: Iterable[Path]) -> str:
    """``name:split:resolved-root:hash`` where the hash covers the sorted relative file list.

    Paths are made relative to ``root`` as listed, without following symlinks, so split or
    class folders linked in from shared storage keep the same identity (and load at all).
    """
    resolved = root.resolve()
    relative = sorted(Path(os.path.relpath(p, root)).as_posix() for p in files)
    digest = hashlib.sha256("\n".join(relative).encode()).hexdigest()[:16]
    return f"{name}:{split}:{resolved}:{len(relative)}files:{digest}"
