"""Synthetic scenes: seeded images of textured regions with known class and depth.

Each scene is a Voronoi partition of the image into a few regions.  A region's class
decides its texture (grating orientation and base colour); a per-scene depth plane
decides how the texture looks at each pixel, as perspective and haze would:

- texture frequency grows with depth (far surfaces look finer),
- texture contrast falls and colour fades toward a grey haze with depth.

So class and depth are both visible in a patch's own pixels, as in real images, and
the image-level label is the class covering the most pixels (ties: lowest class).
Everything is a deterministic function of ``(seed, index)`` and the constructor
arguments, which all enter :attr:`SyntheticScenes.identity`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from scopebench.data.base import Sample

DEPTH_RANGE = (1.0, 8.0)  # planted depth units
_HAZE = np.array([0.55, 0.58, 0.62])
_HAZE_SCALE = 6.0  # depth at which 1 - 1/e of the colour has faded to haze
_FREQ_NEAR, _FREQ_FAR = 0.06, 0.30  # grating frequency (cycles/pixel) at the nearest / farthest depth
_FREQ_STEP = 0.06
_FREQ_LEVELS = np.arange(_FREQ_NEAR, _FREQ_FAR + 1e-9, _FREQ_STEP)


def _class_colours(n_classes: int) -> np.ndarray:
    """Distinct, mid-saturation colours, one per class, spread around the hue circle."""
    hues = np.arange(n_classes) / n_classes
    angles = 2 * math.pi * hues[:, None] + np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    return 0.5 + 0.3 * np.cos(angles)


class SyntheticScenes:
    """``n`` seeded scenes implementing :class:`~scopebench.data.base.ImageDataset`."""

    def __init__(self, n: int, *, image_size: int = 112, n_classes: int = 8, seed: int = 0,
                 min_regions: int = 2, max_regions: int = 5) -> None:
        if n < 1:
            raise ValueError(f"SyntheticScenes needs n >= 1 images, got {n}")
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {n_classes}")
        if not 1 <= min_regions <= max_regions:
            raise ValueError(f"need 1 <= min_regions <= max_regions, got {min_regions}, {max_regions}")
        self.n = n
        self.image_size = image_size
        self.n_classes = n_classes
        self.seed = seed
        self.min_regions = min_regions
        self.max_regions = max_regions
        self._colours = _class_colours(n_classes)
        # orientations spread over [0, pi) so neighbouring classes differ by pi / n_classes
        self._orientations = math.pi * np.arange(n_classes) / n_classes
        # pixel centres in image units, centred on the image: [2, H, W]
        self._centred_grid = (np.mgrid[0:image_size, 0:image_size].astype(np.float64) + 0.5) / image_size - 0.5

    @property
    def identity(self) -> str:
        return (f"scenes:v1:n={self.n}:size={self.image_size}:classes={self.n_classes}:seed={self.seed}"
                f":regions={self.min_regions}-{self.max_regions}")

    def __len__(self) -> int:
        return self.n

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.n:
            raise IndexError(f"scene index {index} out of range for {self.n} scenes")
        return np.random.default_rng([self.seed, index])

    def _layout(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel region index ``[H, W]`` and the class of each region."""
        size = self.image_size
        n_regions = int(rng.integers(self.min_regions, self.max_regions + 1))
        centres = rng.uniform(0, size, size=(n_regions, 2))
        classes = rng.choice(self.n_classes, size=n_regions, replace=n_regions > self.n_classes)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
        d2 = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
        return d2.argmin(axis=0), classes

    def _label(self, segmentation: np.ndarray) -> int:
        return int(np.bincount(segmentation.ravel(), minlength=self.n_classes).argmax())

    def label(self, index: int) -> int:
        """Image-level class of scene ``index`` without rendering its texture (cheap)."""
        regions, classes = self._layout(self._rng(index))
        return self._label(classes[regions])

    @property
    def labels(self) -> list[int]:
        return [self.label(i) for i in range(self.n)]

    def _geometry(self, index: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray, np.ndarray]:
        """The scene's generator (past the geometry's draws), region index ``[H, W]``, region classes, depth ``[H, W]``."""
        rng = self._rng(index)
        regions, classes = self._layout(rng)
        # depth plane: d = d0 + gradient . (position - centre), clipped to DEPTH_RANGE
        lo, hi = DEPTH_RANGE
        yy, xx = self._centred_grid
        tilt = rng.uniform(0.0, 2 * math.pi)
        slope = rng.uniform(0.3, 1.0) * (hi - lo)
        centre_depth = rng.uniform(lo + 0.25 * (hi - lo), hi - 0.25 * (hi - lo))
        depth = np.clip(centre_depth + slope * (np.cos(tilt) * yy + np.sin(tilt) * xx), lo, hi)
        return rng, regions, classes, depth

    def target(self, index: int, field: str) -> int | torch.Tensor | None:
        """The scene's ``field`` without rendering its texture (:func:`scopebench.data.base.read_target`)."""
        if field == "label":
            return self.label(index)
        if field not in ("segmentation", "depth"):
            return None
        _, regions, classes, depth = self._geometry(index)
        return torch.from_numpy(classes[regions]).long() if field == "segmentation" else torch.from_numpy(depth).float()

    def __getitem__(self, index: int) -> Sample:
        rng, regions, classes, depth = self._geometry(index)
        size = self.image_size
        segmentation = classes[regions]
        lo, hi = DEPTH_RANGE
        yy, xx = self._centred_grid

        # texture: oriented grating whose frequency (cycles/pixel) rises with depth.  A
        # single grating cannot change frequency smoothly in 2-D without bending its
        # stripes, so blend gratings at fixed frequency levels with weights that move
        # linearly in frequency (like mip-mapping): the dominant local frequency follows depth.
        theta = self._orientations[segmentation]
        phase = rng.uniform(0, 2 * math.pi, size=len(classes))[regions]
        along = (np.cos(theta) * yy + np.sin(theta) * xx) * size
        frequency = _FREQ_NEAR + (_FREQ_FAR - _FREQ_NEAR) * (depth - lo) / (hi - lo)
        grating = np.zeros_like(depth)
        for level in _FREQ_LEVELS:
            weight = 1.0 - np.abs(frequency - level) / _FREQ_STEP
            on = weight > 0.0  # at most two levels per pixel: the others would add exact zeros
            grating[on] += weight[on] * np.sin(2 * math.pi * level * along[on] + phase[on])
        contrast = 0.35 * np.exp(-(depth - lo) / 5.0)
        noise = rng.normal(0.0, 0.02, size=(3, size, size))

        colour = self._colours[segmentation].transpose(2, 0, 1)  # [3, H, W]
        haze = 1.0 - np.exp(-(depth - lo) / _HAZE_SCALE)
        image = (1 - haze) * (colour + contrast * grating) + haze * _HAZE[:, None, None] + noise
        return Sample(
            image=torch.from_numpy(np.clip(image, 0.0, 1.0)).float(),
            label=self._label(segmentation),
            segmentation=torch.from_numpy(segmentation).long(),
            depth=torch.from_numpy(depth).float(),
        )
