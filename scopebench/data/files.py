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

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

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


def read_matching_map(map_path: Path, size: tuple[int, int], expected: str, modes: tuple[str, ...],
                      what: str) -> np.ndarray:
    """:func:`read_map` of a map (``what``) that must have its image's ``(height, width)``."""
    raw = read_map(map_path, expected, modes=modes)
    if raw.shape != tuple(size):
        raise DatasetLayoutError(f"{what} size {raw.shape} differs from image size {tuple(size)}", map_path, expected)
    return raw


def read_image_and_map(image_path: Path, map_path: Path, expected: str, modes: tuple[str, ...],
                       what: str) -> tuple[torch.Tensor, np.ndarray]:
    """:func:`read_rgb` of the image and :func:`read_matching_map` of its map (``what``)."""
    image = read_rgb(image_path, expected)
    return image, read_matching_map(map_path, tuple(image.shape[1:]), expected, modes, what)


def dataset_identity(name: str, split: str, root: Path, files: Iterable[Path]) -> str:
    """``name:split:resolved-root:hash`` where the hash covers the sorted relative file list.

    Paths are made relative to ``root`` as listed, without following symlinks, so split or
    class folders linked in from shared storage keep the same identity (and load at all).
    """
    resolved = root.resolve()
    relative = sorted(Path(os.path.relpath(p, root)).as_posix() for p in files)
    digest = hashlib.sha256("\n".join(relative).encode()).hexdigest()[:16]
    return f"{name}:{split}:{resolved}:{len(relative)}files:{digest}"
