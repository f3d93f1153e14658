"""Speed of scopebench.analyses.attention_emd.accumulator.AttentionEMDAccumulator (exact) against a plain ot.emd2 loop.

Run: ``pytest bench/perf/test_attention_perf.py --benchmark-enable``.  Workload: SCC (s=1)
views of 3 synthetic scenes through the planted backbone with attention; every head (4) and
every query on the 13x13 overlap gives one pair of dense attention rows, 2,028 pairs in all.
Outlier status of a query is the planted truth of view A.

The plain loop slices each (image, head, query) row pair itself, renormalises it over the
overlap keys, and calls ``ot.emd2`` with the full cost matrix from ``ot.dist`` on grid
coordinates.  The accumulator's per-head and overall means and its counts must agree with it
(means to 1e-6); the speed ratio and the error go to ``extra_info``, speed is never asserted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import ot
import pytest
import torch

from scopebench.analyses.attention_emd.accumulator import AttentionEMDAccumulator
from scopebench.data.scenes import SyntheticScenes
from scopebench.pipeline.scc import OverlapIndex, scc

N_IMAGES, SHIFT = 3, 1
MAX_ABS_DIFF = 1e-6
ROUNDS = 3


@dataclass(frozen=True)
class AttentionCase:
    attn_a: np.ndarray  # [B, H, P+N, P+N] float32 probabilities of view A
    attn_b: np.ndarray
    outliers_a: np.ndarray  # [B, N] bool, planted truth of view A
    overlap: OverlapIndex
    n_prefix: int


@dataclass(frozen=True)
class LoopResult:
    outlier_sum: np.ndarray  # [H] summed W1 over outlier queries
    outlier_count: np.ndarray  # [H]
    normal_sum: np.ndarray
    normal_count: np.ndarray
    seconds: float

    @property
    def means(self) -> dict[str, float]:
        return {"outlier": float(self.outlier_sum.sum() / self.outlier_count.sum()),
                "non_outlier": float(self.normal_sum.sum() / self.normal_count.sum())}


def grid_distance(side: int) -> np.ndarray:
    u, v = np.divmod(np.arange(side * side), side)
    coords = np.stack([u, v], axis=1).astype(np.float64)
    return ot.dist(coords, coords, metric="euclidean")


def plain_loop(case: AttentionCase) -> LoopResult:
    """One ot.emd2 per (image, head, overlap query): rows over overlap keys, renormalised, content-aligned."""
    start = time.perf_counter()
    keys_a = case.overlap.in_a.numpy() + case.n_prefix
    keys_b = case.overlap.in_b.numpy() + case.n_prefix
    cost = grid_distance(case.overlap.side)
    heads = case.attn_a.shape[1]
    sums, counts = np.zeros((2, heads)), np.zeros((2, heads), dtype=np.int64)  # row 0 normal, row 1 outlier
    for image in range(case.attn_a.shape[0]):
        for head in range(heads):
            for query_a, query_b, patch_a in zip(keys_a, keys_b, case.overlap.in_a.numpy()):
                row_a = case.attn_a[image, head, query_a, keys_a].astype(np.float64)
                row_b = case.attn_b[image, head, query_b, keys_b].astype(np.float64)
                is_outlier = int(case.outliers_a[image, patch_a])
                sums[is_outlier, head] += ot.emd2(row_a / row_a.sum(), row_b / row_b.sum(), cost)
                counts[is_outlier, head] += 1
    return LoopResult(sums[1], counts[1], sums[0], counts[0], time.perf_counter() - start)


def accumulate(case: AttentionCase) -> AttentionEMDAccumulator:
    accumulator = AttentionEMDAccumulator(case.overlap, case.n_prefix, method="exact")
    accumulator.update(case.attn_a, case.attn_b, case.outliers_a)
    return accumulator


@pytest.fixture(scope="module")
def case(planted) -> AttentionCase:
    scenes = SyntheticScenes(N_IMAGES, image_size=112, seed=0)
    images = torch.stack([scenes[i].image for i in range(N_IMAGES)])
    spec = planted.spec
    views = scc(images, SHIFT, patch_size=spec.patch_size, grid_side=spec.grid_side)
    with torch.inference_mode():
        out_a = planted.forward_layer(views.view_a, attention=True)
        out_b = planted.forward_layer(views.view_b, attention=True)
        outliers = planted.truth(views.view_a).outlier_mask
    return AttentionCase(out_a.attention.numpy(), out_b.attention.numpy(), outliers.numpy(), views.overlap,
                         spec.n_prefix)


@pytest.fixture(scope="module")
def reference(case: AttentionCase) -> LoopResult:
    return plain_loop(case)


def test_plain_ot_emd2_loop(benchmark, case: AttentionCase, reference: LoopResult, time_rounds) -> None:
    result, seconds = time_rounds(benchmark, lambda: plain_loop(case))
    assert result.means == reference.means  # deterministic: same rows, same numbers
    pairs = int(result.outlier_count.sum() + result.normal_count.sum())
    assert pairs == N_IMAGES * case.attn_a.shape[1] * case.overlap.side**2
    assert result.outlier_count.sum() > 0 and result.normal_count.sum() > 0, "workload needs both kinds of query"
    benchmark.extra_info.update(pairs=pairs, seconds=seconds)


def test_attention_emd_accumulator_exact(benchmark, case: AttentionCase, reference: LoopResult, time_rounds) -> None:
    accumulator, seconds = time_rounds(benchmark, lambda: accumulate(case), rounds=ROUNDS)
    result = accumulator.result()
    outlier_per_head, normal_per_head = accumulator.per_head_means()
    assert result.counts == {"outlier": int(reference.outlier_count.sum()),
                             "non_outlier": int(reference.normal_count.sum()), "skipped": 0}
    errors = np.concatenate([
        np.abs(outlier_per_head - reference.outlier_sum / reference.outlier_count),
        np.abs(normal_per_head - reference.normal_sum / reference.normal_count),
        [abs(result.mean_outlier - reference.means["outlier"]),
         abs(result.mean_non_outlier - reference.means["non_outlier"])],
    ])
    max_abs_diff = float(errors.max())  # NaN (a head without outlier queries on one side only) fails below
    assert max_abs_diff < MAX_ABS_DIFF
    benchmark.extra_info.update(
        n_images=N_IMAGES, heads=case.attn_a.shape[1], pairs=sum(result.counts.values()), seconds=seconds,
        loop_seconds=reference.seconds, speed_ratio=reference.seconds / seconds, max_abs_diff=max_abs_diff,
        mean_outlier=result.mean_outlier, mean_non_outlier=result.mean_non_outlier)
