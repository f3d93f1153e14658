"""Speed of scopebench.analyses.cds.scores.compute_cds against a naive per-feature, per-image ot.emd2 loop.

Run: ``pytest bench/perf/test_cds_perf.py --benchmark-enable``.  The workload is planted-like:
SCC (s=1) tokens of 64 synthetic scenes through the planted backbone, read back from the
activation store, and a BatchTopK SAE (d_in 64, 2048 latents) with random unit decoder rows
(encoder tied) whose inference threshold is set so a token fires ~16 latents; CDS with k=8.

The naive reference encodes every image once, ranks images per feature by peak activation
itself, and solves one ``ot.emd2`` per (feature, top image) with the full 13x13 cost matrix
from ``ot.dist`` on grid coordinates.  It runs on every ``SUBSET_STRIDE``-th feature only;
its time per feature is extrapolated to the whole dictionary (``naive_extrapolated`` in
``extra_info``).  compute_cds must agree with it to 1e-6 on those features; speed is recorded,
never asserted.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import ot
import pytest
import torch

from scopebench.pipeline.cache import ActivationStore
from scopebench.analyses.cds.scores import compute_cds
from scopebench.sae.codes import TokenArray
from scopebench.data.scenes import SyntheticScenes
from scopebench.pipeline.extract import extract_scc_tokens
from scopebench.sae import BatchTopKSAE, build_sae
from scopebench.pipeline.scc import OverlapIndex

N_IMAGES, SHIFT, K = 64, 1, 8
D_SAE, TARGET_L0 = 2048, 16
SUBSET_STRIDE = 4  # the naive loop scores features 0, 4, 8, ...
MAX_ABS_DIFF = 1e-6
ROUNDS = 3


@dataclass(frozen=True)
class NaiveCDS:
    cds: np.ndarray  # [n_features] NaN = no usable image
    n_used: np.ndarray  # [n_features]
    encode_seconds: float  # encoding every image once (does not grow with the feature count)
    loop_seconds: float  # ranking + one ot.emd2 per (feature, image): grows with the feature count


@dataclass(frozen=True)
class CDSCase:
    sae: BatchTopKSAE
    tokens_a: TokenArray
    tokens_b: TokenArray
    overlap: OverlapIndex
    features: np.ndarray  # the subset the naive loop scores
    reference: NaiveCDS


def random_sparse_batchtopk(tokens: np.ndarray) -> BatchTopKSAE:
    """Random-direction BatchTopK SAE whose threshold keeps ~TARGET_L0 latents per token of ``tokens``."""
    flat = torch.from_numpy(tokens.reshape(-1, tokens.shape[-1]))
    sae = build_sae({"architecture": "batchtopk", "d_in": flat.shape[1], "d_sae": D_SAE, "k": TARGET_L0}).eval()
    with torch.no_grad():
        sae.initialise(torch.Generator().manual_seed(0), data_mean=flat.mean(0))
        pre = sae.pre_activations(flat).flatten()
        keep = TARGET_L0 * flat.shape[0]
        sae.threshold.fill_(float(pre.kthvalue(pre.numel() - keep).values))
    return sae


def grid_distance(side: int) -> np.ndarray:
    """Full ``[side^2, side^2]`` Euclidean cost between patch centres, built independently with POT."""
    u, v = np.divmod(np.arange(side * side), side)
    coords = np.stack([u, v], axis=1).astype(np.float64)
    return ot.dist(coords, coords, metric="euclidean")


def naive_cds(sae: BatchTopKSAE, tokens_a: TokenArray, tokens_b: TokenArray, overlap: OverlapIndex,
              features: np.ndarray, k: int) -> NaiveCDS:
    """CDS of ``features`` from scratch: full encode, per-feature image ranking, one ot.emd2 per pair."""
    start = time.perf_counter()
    a = torch.from_numpy(np.asarray(tokens_a, dtype=np.float32)[:, overlap.in_a.numpy()])
    b = torch.from_numpy(np.asarray(tokens_b, dtype=np.float32)[:, overlap.in_b.numpy()])
    n_img, g, d_in = a.shape
    with torch.no_grad():
        maps_a = sae.encode(a.reshape(-1, d_in)).reshape(n_img, g, -1)[:, :, features].double().numpy()
        maps_b = sae.encode(b.reshape(-1, d_in)).reshape(n_img, g, -1)[:, :, features].double().numpy()
    encoded = time.perf_counter()

    cost = grid_distance(overlap.side)
    D = math.sqrt(2.0) * (overlap.side - 1)
    peak = np.maximum(maps_a.max(axis=1), maps_b.max(axis=1))  # [n_img, n_features]
    cds = np.full(features.size, np.nan)
    n_used = np.zeros(features.size, dtype=np.int64)
    for f in range(features.size):
        ranked = np.argsort(-peak[:, f], kind="stable")[:k]
        distances = []
        for image in ranked[peak[ranked, f] > 0]:
            map_a, map_b = maps_a[image, :, f], maps_b[image, :, f]
            if map_a.sum() > 0 and map_b.sum() > 0:
                distances.append(ot.emd2(map_a / map_a.sum(), map_b / map_b.sum(), cost))
        n_used[f] = len(distances)
        if distances:
            cds[f] = float(np.mean(distances)) / D
    return NaiveCDS(cds=cds, n_used=n_used, encode_seconds=encoded - start,
                    loop_seconds=time.perf_counter() - encoded)


@pytest.fixture(scope="module")
def case(planted, tmp_path_factory: pytest.TempPathFactory) -> CDSCase:
    store = ActivationStore(tmp_path_factory.mktemp("cds-cache"))
    views = extract_scc_tokens(planted, SyntheticScenes(N_IMAGES, image_size=112, seed=0), store, SHIFT,
                               progress=False)
    sae = random_sparse_batchtopk(np.asarray(views.tokens_a))
    features = np.arange(0, D_SAE, SUBSET_STRIDE)
    reference = naive_cds(sae, views.tokens_a, views.tokens_b, views.overlap, features, K)
    return CDSCase(sae, views.tokens_a, views.tokens_b, views.overlap, features, reference)


def test_naive_pot_loop_on_feature_subset(benchmark, case: CDSCase, time_rounds) -> None:
    result, seconds = time_rounds(benchmark, lambda: naive_cds(case.sae, case.tokens_a, case.tokens_b,
                                                                 case.overlap, case.features, K))
    np.testing.assert_array_equal(result.cds, case.reference.cds)  # deterministic: same inputs, same numbers
    benchmark.extra_info.update(features=int(case.features.size), pairs=int(result.n_used.sum()), seconds=seconds,
                                encode_seconds=result.encode_seconds, loop_seconds=result.loop_seconds)


def test_compute_cds(benchmark, case: CDSCase, time_rounds) -> None:
    result, seconds = time_rounds(benchmark, lambda: compute_cds(case.sae, case.tokens_a, case.tokens_b, case.overlap,
                                                                 k=K, progress=False), rounds=ROUNDS)
    ours, ref = result.cds[case.features], case.reference.cds
    assert np.array_equal(np.isnan(ours), np.isnan(ref)), "ours and the naive loop disagree on which features score"
    np.testing.assert_array_equal(result.n_images_used[case.features], case.reference.n_used)
    scored = ~np.isnan(ref)
    assert scored.sum() > case.features.size // 3, "workload too sparse to compare: most features never fire"
    max_abs_diff = float(np.abs(ours[scored] - ref[scored]).max())
    assert max_abs_diff < MAX_ABS_DIFF

    per_feature = case.reference.loop_seconds / case.features.size
    naive_total = case.reference.encode_seconds + per_feature * D_SAE
    benchmark.extra_info.update(
        n_images=N_IMAGES, d_sae=D_SAE, k=K, seconds=seconds, scored_features=int(np.isfinite(result.cds).sum()),
        pairs=int(result.n_images_used.sum()), compared_features=int(scored.sum()), max_abs_diff=max_abs_diff,
        naive_extrapolated=True,
        naive_note=(f"naive ot.emd2 loop run on {case.features.size} of {D_SAE} features (every "
                    f"{SUBSET_STRIDE}th); its loop time per feature is scaled to {D_SAE} features"),
        naive_seconds_per_feature=per_feature, naive_seconds_extrapolated=naive_total,
        speed_ratio=naive_total / seconds)
