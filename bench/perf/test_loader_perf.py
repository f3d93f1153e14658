"""Extraction with DataLoader workers against the serial path, on a tree of JPEGs of ImageNet-like sizes.

Run: ``pytest bench/perf/test_loader_perf.py --benchmark-enable``.  The case writes the JPEGs
itself (``jpeg_tree.py``: an ImageNet ``train`` folder of 500x375-like photos-to-be, about
ImageNet's bytes per image) and reads them with :class:`scopebench.data.ImageNet`.

- decode-bound: the planted backbone (112 px input, a cheap forward), ``extract_tokens`` with
  ``workers=0`` (decode and resize in the main process, then forward) against
  ``workers=<CPUs>``; goal on 2 cores: at least 1.7x the serial path;
- compute-bound: a random-init ViT-B/16 (DeiT3-B geometry), the forward pass alone on pixel
  batches decoded beforehand against ``extract_tokens`` with workers; goal: within 15% of the
  forward alone (decoding hidden behind compute).

The two paths of a pair run in alternating rounds (the fastest of each counts), so a change of
load on the shared machine reaches both, and must give the same tokens exactly.  ``extra_info``
carries images/s of both, the ratio and the 1-minute load average; speed is recorded, never asserted.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.perf.jpeg_tree import write_jpeg_tree
from scopebench.backbones import Backbone, load_backbone
from scopebench.data.imagenet import ImageNet
from scopebench.pipeline.cache import ActivationStore
from scopebench.pipeline.extract import extract_tokens, plain_view
from scopebench.pipeline.loader import available_cpus

N_PLANTED, N_VIT, BATCH, VIT_BATCH = 256, 24, 32, 8


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory) -> ImageNet:
    return write_jpeg_tree(tmp_path_factory.mktemp("imagenet"), N_PLANTED)


@pytest.fixture(scope="module")
def vit() -> Backbone:
    return load_backbone("deit3-b", random_init=True)


def _extract(backbone: Backbone, data: ImageNet, root: Path, workers: int, n: int, batch: int) -> np.ndarray:
    shutil.rmtree(root, ignore_errors=True)
    acts = extract_tokens(backbone, data, ActivationStore(root), indices=np.arange(n), batch_size=batch,
                          workers=workers, progress=False)
    return np.asarray(acts.tokens)


def _alternate(benchmark, reference: Callable[[], np.ndarray], ours: Callable[[], np.ndarray],
               rounds: int) -> tuple[float, float]:
    """Fastest seconds of ``reference`` and ``ours``, timed in alternating rounds; their results must agree.

    Alternating spreads the shared machine's load changes over both paths instead of one.
    """
    seconds: dict[str, list[float]] = {"reference": [], "ours": []}

    def pair() -> None:
        results = {}
        for name, fn in (("reference", reference), ("ours", ours)):
            start = time.perf_counter()
            results[name] = fn()
            seconds[name].append(time.perf_counter() - start)
        np.testing.assert_array_equal(results["ours"], results["reference"])

    benchmark.pedantic(pair, rounds=rounds, iterations=1, warmup_rounds=0)
    return min(seconds["reference"]), min(seconds["ours"])


def _record(benchmark, n: int, workers: int, reference: float, ours: float) -> None:
    benchmark.extra_info.update(n_images=n, workers=workers, reference_seconds=reference, ours_seconds=ours,
                                reference_images_per_s=n / reference, ours_images_per_s=n / ours,
                                load_average_1min=os.getloadavg()[0], torch_threads=torch.get_num_threads())


def test_decode_bound_extraction_with_workers_against_the_serial_path(benchmark, planted, jpegs, tmp_path) -> None:
    workers = available_cpus()
    serial, ours = _alternate(benchmark, lambda: _extract(planted, jpegs, tmp_path / "s", 0, N_PLANTED, BATCH),
                              lambda: _extract(planted, jpegs, tmp_path / "w", workers, N_PLANTED, BATCH), rounds=3)
    _record(benchmark, N_PLANTED, workers, serial, ours)
    benchmark.extra_info["speedup_over_serial"] = serial / ours  # goal on 2 cores: >= 1.7


def _decoded_batches(backbone: Backbone, data: ImageNet) -> list[torch.Tensor]:
    make_view = plain_view(backbone)
    pixels = [make_view(data[i].image)[""] for i in range(N_VIT)]
    return [torch.stack(pixels[first : first + VIT_BATCH]) for first in range(0, N_VIT, VIT_BATCH)]


def _forward_alone(backbone: Backbone, batches: list[torch.Tensor]) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([backbone.forward_layer(pixels).tokens.float().cpu().numpy() for pixels in batches])


def test_compute_bound_extraction_with_workers_against_the_forward_alone(benchmark, vit, jpegs, tmp_path) -> None:
    workers = available_cpus()
    batches = _decoded_batches(vit, jpegs)  # decoded once, outside the timing
    _forward_alone(vit, batches[:1])  # warm-up
    alone, ours = _alternate(benchmark, lambda: _forward_alone(vit, batches),
                             lambda: _extract(vit, jpegs, tmp_path / "v", workers, N_VIT, VIT_BATCH), rounds=3)
    _record(benchmark, N_VIT, workers, alone, ours)
    benchmark.extra_info["time_over_forward_alone"] = ours / alone  # goal: <= 1.15
