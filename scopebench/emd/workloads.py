"""Synthetic EMD workloads and the plain ``ot.emd2`` loop they are timed against.

One home for the maps that the EMD perf cases (``bench/perf/test_emd_perf.py``), the plan's
calibration (``scopebench.suite.plan``) and the GPU check (``scripts/gpu_check.py``) solve:

- dense attention-like maps: softmax rows peaked around a query cell, two noisy views of the
  same query (what attention EMD compares);
- sparse SAE-like feature maps: a few active cells, often one or two (what CDS compares).
"""
from __future__ import annotations

import numpy as np
import ot

from scopebench.emd.cost import grid_cost


def attention_like_maps(rng: np.random.Generator, pairs: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` ``[pairs, side**2]`` unit-mass dense maps around the same query cell."""
    g = side * side
    row, col = np.divmod(np.arange(g), side)
    qr, qc = np.divmod(rng.integers(0, g, pairs), side)
    width = rng.uniform(1, 3, (pairs, 1))
    logits = -((row[None] - qr[:, None]) ** 2 + (col[None] - qc[:, None]) ** 2) / (2 * width**2)
    a = np.exp(logits + rng.normal(0, 1, (pairs, g)))
    b = np.exp(logits + rng.normal(0, 1, (pairs, g)))
    return a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)


def sparse_feature_maps(rng: np.random.Generator, pairs: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` ``[pairs, side**2]`` non-negative maps with a few active cells (at least one per row)."""
    g = side * side
    maps = []
    for _ in range(2):
        active = rng.random((pairs, g)) < rng.choice([0.01, 0.05, 0.15], size=(pairs, 1))
        active[np.arange(pairs), rng.integers(0, g, pairs)] = True
        maps.append(rng.exponential(1.0, (pairs, g)) * active)
    return maps[0], maps[1]


MAP_KINDS = {"dense": attention_like_maps, "sparse": sparse_feature_maps}


def emd2_loop(a: np.ndarray, b: np.ndarray, side: int) -> np.ndarray:
    """W1 of each normalised row pair by one ``ot.emd2`` call per pair: the reference and the naive speed."""
    cost = np.array(grid_cost(side))
    return np.array([ot.emd2(x / x.sum(), y / y.sum(), cost) for x, y in zip(a, b)])
