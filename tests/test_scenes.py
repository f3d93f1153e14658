"""Synthetic scenes: deterministic, well-formed, and class / depth visible in local appearance."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scopebench.data.base import ImageDataset, read_target
from scopebench.data.scenes import DEPTH_RANGE, SyntheticScenes

PATCH = 16


@pytest.fixture(scope="module")
def data() -> SyntheticScenes:
    return SyntheticScenes(12, seed=5)


@pytest.fixture(scope="module")
def samples(data) -> list:
    return [data[i] for i in range(len(data))]


def test_protocol_shapes_and_ranges(data, samples):
    assert isinstance(data, ImageDataset) and len(data) == 12
    for s in samples:
        assert s.image.shape == (3, 112, 112) and s.image.dtype == torch.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert s.segmentation.shape == (112, 112) and s.segmentation.dtype == torch.long
        assert 0 <= s.segmentation.min() and s.segmentation.max() < 8
        assert s.depth.shape == (112, 112) and s.depth.dtype == torch.float32
        assert (s.depth > 0).all() and DEPTH_RANGE[0] <= s.depth.min() and s.depth.max() <= DEPTH_RANGE[1]
        assert s.depth.std() > 0.3  # a depth plane, not a constant


def test_label_is_the_majority_region_class(data, samples):
    for i, s in enumerate(samples):
        counts = torch.bincount(s.segmentation.flatten(), minlength=8)
        assert s.label == int(counts.argmax())
        assert data.label(i) == s.label
    assert data.labels == [s.label for s in samples]
    assert len(set(data.labels)) > 2


def test_deterministic_per_seed_and_index_with_full_identity(samples):
    again = SyntheticScenes(12, seed=5)[3]
    assert torch.equal(again.image, samples[3].image) and torch.equal(again.depth, samples[3].depth)
    # the same index in a longer dataset is the same scene: content depends on (seed, index) only
    assert torch.equal(SyntheticScenes(50, seed=5)[3].image, samples[3].image)
    assert not torch.equal(SyntheticScenes(12, seed=6)[3].image, samples[3].image)
    variants = [SyntheticScenes(12, seed=5), SyntheticScenes(13, seed=5), SyntheticScenes(12, seed=6),
                SyntheticScenes(12, seed=5, image_size=96), SyntheticScenes(12, seed=5, n_classes=6),
                SyntheticScenes(12, seed=5, max_regions=3)]
    assert len({v.identity for v in variants}) == len(variants)


def test_targets_without_rendering_equal_the_samples(data, samples):
    for i, s in enumerate(samples):
        assert read_target(data, i, "label") == s.label
        assert torch.equal(read_target(data, i, "segmentation"), s.segmentation)
        assert torch.equal(read_target(data, i, "depth"), s.depth)
    with pytest.raises(IndexError, match="out of range"):
        data.target(len(data), "depth")


def _patches(x: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` -> ``[n, PATCH, PATCH]`` non-overlapping patches."""
    side = x.shape[-1] // PATCH
    return x.reshape(side, PATCH, side, PATCH).permute(0, 2, 1, 3).reshape(-1, PATCH, PATCH)


def _dominant_frequency(patch: np.ndarray) -> tuple[float, float]:
    """(radial frequency in cycles/pixel, orientation of the wave normal mod pi) of the FFT peak."""
    window = np.outer(np.hanning(PATCH), np.hanning(PATCH))
    spectrum = np.abs(np.fft.fft2((patch - patch.mean()) * window, s=(64, 64)))
    fy, fx = np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij")
    k = spectrum.argmax()
    return float(np.hypot(fy.flat[k], fx.flat[k])), float(np.arctan2(fx.flat[k], fy.flat[k]) % math.pi)


def test_texture_orientation_says_the_class_and_frequency_contrast_say_depth(samples):
    hits, total = 0, 0
    freq, contrast, depth = [], [], []
    for s in samples:
        grey = s.image.mean(0)
        for g, seg, d in zip(_patches(grey), _patches(s.segmentation), _patches(s.depth)):
            if not (seg == seg[0, 0]).all():
                continue
            f, angle = _dominant_frequency(g.numpy().astype(np.float64))
            expected = math.pi * int(seg[0, 0]) / 8
            gap = abs(angle - expected) % math.pi
            hits += min(gap, math.pi - gap) < math.pi / 16
            total += 1
            freq.append(f)
            contrast.append(float(g.std()))
            depth.append(float(d.mean()))
    assert total > 200 and hits / total > 0.8  # chance would be ~1/8
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(rank(depth), rank(freq))[0, 1] > 0.6  # far = finer texture
    assert np.corrcoef(rank(depth), rank(contrast))[0, 1] < -0.6  # far = lower contrast


def test_bad_arguments(data):
    with pytest.raises(IndexError, match="out of range"):
        data[12]
    with pytest.raises(ValueError, match="n >= 1"):
        SyntheticScenes(0)
    with pytest.raises(ValueError, match="n_classes"):
        SyntheticScenes(3, n_classes=1)
