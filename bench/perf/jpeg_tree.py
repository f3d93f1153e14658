"""A tree of synthetic JPEGs of ImageNet-like sizes in the ImageFolder layout, for loader speed checks.

Smooth colour fields plus grain, saved at quality 90: about ImageNet's bytes and decode cost
per image (pure noise would decode slower, flat colour faster).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from scopebench.data.imagenet import ImageNet

SIZES = [(500, 375), (375, 500), (500, 333), (500, 400), (640, 480), (333, 500)]  # common ImageNet shapes


def _photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    coarse = Image.fromarray(rng.integers(0, 256, size=(height // 40 + 2, width // 40 + 2, 3), dtype=np.uint8))
    base = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float32)
    grain = rng.normal(0.0, 12.0, size=(height, width, 3))
    return Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8))


def write_jpeg_tree(root: Path, n_images: int, *, n_classes: int = 8, seed: int = 0) -> ImageNet:
    """``root/train/<wnid>/*.JPEG`` with ``n_images`` seeded photos-to-be, read back as an ImageNet split."""
    rng = np.random.default_rng(seed)
    for index in range(n_images):
        folder = Path(root) / "train" / f"n{index % n_classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        _photo(rng, *SIZES[index % len(SIZES)]).save(folder / f"img{index:05d}.JPEG", quality=90)
    return ImageNet(root, split="train")
