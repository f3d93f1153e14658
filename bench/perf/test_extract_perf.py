"""Speed of extraction into the activation store: cold, warm (cache hit), and a plain forward loop.

Run: ``pytest bench/perf/test_extract_perf.py --benchmark-enable``.  Workload: 64 synthetic
scenes through the planted backbone, batch 32.

- plain loop: render each batch, square-resize it, call ``backbone.forward_layer`` and keep the
  tokens in memory: the work extraction cannot avoid (reference and ground truth);
- cold: ``extract_tokens`` into a fresh store every round (forward + hashing + atomic writes);
- warm: the same call again on a filled store, then reading all tokens back (checksummed
  memory maps); it must do no forward pass.

Cold and warm tokens must equal the plain loop's exactly.  ``extra_info`` carries tokens/s,
cold/plain (the store's overhead) and warm/cold (what a cache hit costs); speed is recorded,
never asserted.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from scopebench.backbones import Backbone, LayerOutput
from scopebench.pipeline.cache import ActivationStore
from scopebench.data.scenes import SyntheticScenes
from scopebench.pipeline.extract import Activations, extract_tokens
from scopebench.pipeline.scc import square_resize

N_IMAGES, BATCH = 64, 32
COLD_ROUNDS, WARM_ROUNDS, PLAIN_ROUNDS = 3, 5, 3
_seconds: dict[str, float] = {}  # fastest round per case in this session, for the ratios


class CountingBackbone:
    """Delegates to a backbone and counts the images it forwards (to prove a cache hit skips them)."""

    def __init__(self, inner: Backbone) -> None:
        self.inner = inner
        self.spec, self.preprocess = inner.spec, inner.preprocess
        self.images_forwarded = 0

    @property
    def weights_id(self) -> str:
        return self.inner.weights_id

    def forward_layer(self, pixels: torch.Tensor, *, attention: bool = False) -> LayerOutput:
        self.images_forwarded += pixels.shape[0]
        return self.inner.forward_layer(pixels, attention=attention)


@dataclass(frozen=True)
class PlainTokens:
    tokens: np.ndarray  # [n_img, N, D]
    prefix: np.ndarray  # [n_img, P, D]


def plain_forward_loop(backbone: Backbone, scenes: SyntheticScenes) -> PlainTokens:
    """Tokens of every scene by calling ``forward_layer`` directly, same batches and resize as extraction."""
    pre = backbone.preprocess
    tokens, prefix = [], []
    with torch.inference_mode():
        for first in range(0, len(scenes), BATCH):
            pixels = torch.stack([square_resize(scenes[i].image, pre.image_size, pre.interpolation)
                                  for i in range(first, min(first + BATCH, len(scenes)))])
            out = backbone.forward_layer(pixels)
            tokens.append(out.tokens.float().numpy())
            prefix.append(out.prefix.float().numpy())
    return PlainTokens(np.concatenate(tokens), np.concatenate(prefix))


def read_all(activations: Activations) -> PlainTokens:
    """Every stored token in memory (touching each shard, so checksums are verified)."""
    return PlainTokens(np.asarray(activations.tokens), np.asarray(activations.prefix))


def assert_same_tokens(got: PlainTokens, expected: PlainTokens) -> None:
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    np.testing.assert_array_equal(got.prefix, expected.prefix)


@pytest.fixture(scope="module")
def scenes() -> SyntheticScenes:
    return SyntheticScenes(N_IMAGES, image_size=112, seed=0)


@pytest.fixture(scope="module")
def reference(planted, scenes: SyntheticScenes) -> PlainTokens:
    return plain_forward_loop(planted, scenes)


def _record(benchmark, case: str, seconds: float) -> None:
    _seconds[case] = seconds
    n_tokens = N_IMAGES * (196 + 1)  # 14x14 patch tokens + 1 prefix token per image
    benchmark.extra_info.update(n_images=N_IMAGES, seconds=seconds, images_per_s=N_IMAGES / seconds,
                                tokens_per_s=n_tokens / seconds)


def test_plain_forward_loop(benchmark, planted, scenes: SyntheticScenes, reference: PlainTokens, time_rounds) -> None:
    result, seconds = time_rounds(benchmark, lambda: plain_forward_loop(planted, scenes), rounds=PLAIN_ROUNDS)
    assert_same_tokens(result, reference)  # deterministic backbone: every run gives the same numbers
    _record(benchmark, "plain", seconds)


def test_extract_cold(benchmark, planted, scenes: SyntheticScenes, reference: PlainTokens, tmp_path: Path,
                      time_rounds) -> None:
    root = tmp_path / "store"
    counting = CountingBackbone(planted)

    def empty_store() -> None:
        shutil.rmtree(root, ignore_errors=True)
        counting.images_forwarded = 0

    result, seconds = time_rounds(
        benchmark, lambda: read_all(extract_tokens(counting, scenes, ActivationStore(root), batch_size=BATCH,
                                                   progress=False)),
        rounds=COLD_ROUNDS, setup=empty_store)
    assert counting.images_forwarded == N_IMAGES  # each cold round forwards every image exactly once
    assert_same_tokens(result, reference)
    _record(benchmark, "cold", seconds)
    if "plain" in _seconds:
        benchmark.extra_info["cold_over_plain"] = seconds / _seconds["plain"]


def test_extract_warm(benchmark, planted, scenes: SyntheticScenes, reference: PlainTokens, tmp_path: Path,
                      time_rounds) -> None:
    store = ActivationStore(tmp_path / "store")
    counting = CountingBackbone(planted)
    cold = read_all(extract_tokens(counting, scenes, store, batch_size=BATCH, progress=False))
    assert counting.images_forwarded == N_IMAGES
    counting.images_forwarded = 0

    result, seconds = time_rounds(
        benchmark, lambda: read_all(extract_tokens(counting, scenes, store, batch_size=BATCH, progress=False)),
        rounds=WARM_ROUNDS)
    assert counting.images_forwarded == 0, "a cache hit ran the backbone"
    assert_same_tokens(result, cold)
    assert_same_tokens(result, reference)
    _record(benchmark, "warm", seconds)
    for case in ("cold", "plain"):
        if case in _seconds:
            benchmark.extra_info[f"warm_over_{case}"] = seconds / _seconds[case]
