"""CDS, top-k image selection, gamma and the low/high partition, against hand-made truths and POT."""
from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from scopebench.analyses.cds.scores import compute_cds, feature_maps, top_images_per_feature
from scopebench.analyses.cds.partition import auto_gamma, partition, resolve_gamma
from scopebench.pipeline.scc import overlap_index
from scopebench.analyses.valley import UnimodalError
from tiny_sae import ReluSAE

P, S = 6, 1  # 6x6 patch grid, shift 1: 5x5 overlap, D = 4 sqrt(2)


def put(tokens: np.ndarray, image: int, feature: int, view_index: torch.Tensor, content_map: np.ndarray) -> None:
    """Write a content-coordinate map of ``feature`` into one view's patch sequence."""
    tokens[image, view_index.numpy(), feature] = content_map.ravel()


def grid_coords(side: int) -> np.ndarray:
    u, v = np.divmod(np.arange(side * side), side)
    return np.stack([u, v], 1).astype(np.float64)


def pot_w1(a: np.ndarray, b: np.ndarray, side: int) -> float:
    coords = grid_coords(side)
    return float(ot.emd2(a.ravel() / a.sum(), b.ravel() / b.sum(), ot.dist(coords, coords, metric="euclidean")))


def test_moved_feature_scores_offset_over_D_and_content_fixed_feature_scores_zero() -> None:
    ov = overlap_index(P, S)
    side = ov.side
    rng = np.random.default_rng(0)
    n_img, d = 3, 3
    ta, tb = np.zeros((n_img, P * P, d), np.float32), np.zeros((n_img, P * P, d), np.float32)
    for img in range(n_img):
        blob_a, blob_b = np.zeros((side, side)), np.zeros((side, side))
        blob_a[1, 1], blob_b[3, 2] = 1.0 + img, 2.0  # moves by (2, 1) in content coordinates
        put(ta, img, 0, ov.in_a, blob_a)
        put(tb, img, 0, ov.in_b, blob_b)
        fixed = rng.random((side, side))  # same content in both views
        put(ta, img, 1, ov.in_a, fixed)
        put(tb, img, 1, ov.in_b, fixed)
    ta[:, 0, 1] = 50.0  # outside A's overlap: must not matter
    ta[:, :, 2] = -1.0  # feature 2 never fires (ReLU)
    tb[:, :, 2] = -1.0
    res = compute_cds(ReluSAE(torch.eye(d)), ta, tb, ov, k=2, batch_size=2, progress=False)
    D = math.sqrt(2) * (side - 1)
    assert res.D == pytest.approx(D) and res.side == side and res.shift == S and res.k == 2
    assert res.cds[0] == pytest.approx(math.sqrt(5) / D, abs=1e-9)
    assert res.cds[1] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(res.cds[2]) and res.n_images_used[2] == 0 and res.dead.tolist() == [False, False, True]
    assert res.n_images_used[:2].tolist() == [2, 2]


def test_top_k_images_follow_peak_activation_over_both_views() -> None:
    ov = overlap_index(P, S)
    rng = np.random.default_rng(1)
    n_img, d, k = 7, 4, 3
    ta = rng.normal(size=(n_img, P * P, d)).astype(np.float32)
    tb = rng.normal(size=(n_img, P * P, d)).astype(np.float32)
    ta[:, :, 3] = -1.0
    tb[:, :, 3] = -1.0
    ta[[2, 5], ov.in_a[4].item(), 3] = [0.7, 0.3]  # feature 3 fires on exactly two images
    sae = ReluSAE(torch.eye(d))
    images, values = top_images_per_feature(sae, ta, tb, ov, k=k, batch_size=2, progress=False)
    peak = np.maximum(np.maximum(ta[:, ov.in_a.numpy()], 0).max(1), np.maximum(tb[:, ov.in_b.numpy()], 0).max(1))
    for j in range(3):
        expected = np.argsort(-peak[:, j])[:k]
        assert images[:, j].tolist() == expected.tolist()
        np.testing.assert_allclose(values[:, j], peak[expected, j], rtol=1e-6)
    assert images[:, 3].tolist() == [2, 5, -1]
    np.testing.assert_allclose(values[:, 3], [0.7, 0.3, 0.0], rtol=1e-6)


def test_images_with_an_empty_map_in_either_view_are_skipped() -> None:
    ov = overlap_index(P, S)
    side = ov.side
    rng = np.random.default_rng(2)
    ta, tb = np.zeros((4, P * P, 1), np.float32), np.zeros((4, P * P, 1), np.float32)
    put(ta, 0, 0, ov.in_a, 9.0 * (rng.random((side, side)) > 0.5))  # strongest image, absent from view B
    maps = {}
    for img in (1, 2):
        maps[img] = rng.random((side, side)), rng.random((side, side))
        put(ta, img, 0, ov.in_a, maps[img][0])
        put(tb, img, 0, ov.in_b, maps[img][1])
    res = compute_cds(ReluSAE(torch.eye(1)), ta, tb, ov, k=3, batch_size=3, progress=False)
    assert res.top_images[:, 0].tolist()[0] == 0 and res.n_images_used[0] == 2
    expected = (pot_w1(*maps[1], side) + pot_w1(*maps[2], side)) / (2 * res.D)
    assert res.cds[0] == pytest.approx(expected, rel=1e-6)  # maps pass through float32 codes


def brute_force_cds(sae: ReluSAE, ta: np.ndarray, tb: np.ndarray, grid_side: int, shift: int, k: int) -> np.ndarray:
    ov = overlap_index(grid_side, shift)
    with torch.no_grad():
        ca = sae.encode(torch.from_numpy(ta)).numpy()[:, ov.in_a.numpy()]  # [n_img, G, d_sae]
        cb = sae.encode(torch.from_numpy(tb)).numpy()[:, ov.in_b.numpy()]
    D = math.sqrt(2) * (ov.side - 1)
    out = np.full(sae.d_sae, np.nan)
    for j in range(sae.d_sae):
        peak = np.maximum(ca[:, :, j].max(1), cb[:, :, j].max(1))
        chosen = [i for i in np.argsort(-peak)[:k] if peak[i] > 0]
        emds = [pot_w1(ca[i, :, j], cb[i, :, j], ov.side) for i in chosen
                if ca[i, :, j].sum() > 0 and cb[i, :, j].sum() > 0]
        if emds:
            out[j] = sum(emds) / (len(emds) * D)
    return out


def test_matches_brute_force_pot_on_random_memmapped_tokens(tmp_path) -> None:
    rng = np.random.default_rng(3)
    grid_side, shift, n_img, d_in, d_sae, k = 5, 2, 6, 6, 10, 3
    sae = ReluSAE(torch.from_numpy(rng.normal(size=(d_in, d_sae))) - 0.8)
    arrays = []
    for name in ("a", "b"):
        mm = np.memmap(tmp_path / f"tokens_{name}.f32", dtype=np.float32, mode="w+", shape=(n_img, grid_side**2, d_in))
        mm[:] = rng.normal(size=mm.shape)
        mm.flush()
        arrays.append(np.memmap(tmp_path / f"tokens_{name}.f32", dtype=np.float32, mode="r", shape=mm.shape))
    res = compute_cds(sae, arrays[0], arrays[1], overlap_index(grid_side, shift), k=k, batch_size=2, emd_batch=7,
                      progress=False)
    expected = brute_force_cds(sae, np.array(arrays[0]), np.array(arrays[1]), grid_side, shift, k)
    np.testing.assert_allclose(res.cds, expected, rtol=1e-6, atol=1e-9)
    assert np.isfinite(expected).sum() >= d_sae // 2  # the case exercises real scores, not only NaNs
    assert ((res.cds >= 0) & (res.cds <= 1))[np.isfinite(res.cds)].all()


def test_feature_maps_are_the_codes_on_the_chosen_patches() -> None:
    rng = np.random.default_rng(4)
    tokens = rng.normal(size=(5, P * P, 3)).astype(np.float32)
    sae = ReluSAE(torch.from_numpy(rng.normal(size=(3, 4))))
    ov = overlap_index(P, S)
    images = np.array([[4, 0], [2, -1]])
    maps = feature_maps(sae, tokens, [1, 3], images, patch_index=ov.in_a)
    codes = np.maximum(tokens @ sae.W_enc.detach().numpy(), 0)
    np.testing.assert_allclose(maps[0, 0].ravel(), codes[4, ov.in_a.numpy(), 1], rtol=1e-5)
    np.testing.assert_allclose(maps[1, 0].ravel(), codes[2, ov.in_a.numpy(), 3], rtol=1e-5)
    assert (maps[1, 1] == 0).all()
    full = feature_maps(sae, tokens, [0], np.array([[3]]))
    np.testing.assert_allclose(full[0, 0], codes[3, :, 0].reshape(P, P), rtol=1e-5)


def test_bad_inputs_name_the_problem() -> None:
    sae = ReluSAE(torch.eye(2))
    ta = np.zeros((2, P * P, 2), np.float32)
    with pytest.raises(ValueError, match="differ in shape"):
        compute_cds(sae, ta, ta[:1], overlap_index(P, S), k=1, progress=False)
    with pytest.raises(ValueError, match="does not fit"):
        compute_cds(sae, ta, ta, overlap_index(P + 1, S), k=1, progress=False)
    with pytest.raises(ValueError, match="d_in=3"):
        compute_cds(ReluSAE(torch.eye(3)), ta, ta, overlap_index(P, S), k=1, progress=False)
    with pytest.raises(ValueError, match="D=0"):
        compute_cds(sae, ta, ta, overlap_index(P, P - 1), k=1, progress=False)


def test_auto_gamma_lies_in_the_valley_and_partition_counts_match() -> None:
    rng = np.random.default_rng(5)
    low = np.clip(rng.normal(0.05, 0.02, 900), 0, 1)
    high = np.clip(rng.normal(0.6, 0.08, 100), 0, 1)
    cds = np.concatenate([low, high, [np.nan] * 7])
    gamma = auto_gamma(cds)
    assert low.max() < gamma < high.min()
    part = partition(cds, resolve_gamma(None, cds))
    assert part.gamma == gamma and (part.n_low, part.n_high, part.n_dead) == (900, 100, 7)
    assert set(part.low) == set(range(900)) and set(part.high) == set(range(900, 1000))
    fixed = partition(cds, resolve_gamma(0.05, cds))
    assert fixed.n_low == int((low <= 0.05).sum()) and fixed.n_high == 1000 - fixed.n_low
    assert (cds[fixed.low] <= 0.05).all() and (cds[fixed.high] > 0.05).all()
    boundary = partition(np.array([0.1, 0.2, 0.3, np.nan]), 0.2)  # CDS == gamma is low-CDS
    assert boundary.low.tolist() == [0, 1] and boundary.high.tolist() == [2] and boundary.n_dead == 1


def test_gamma_errors_are_explicit() -> None:
    with pytest.raises(UnimodalError, match="unimodal"):
        auto_gamma(np.random.default_rng(6).normal(0.1, 0.02, 500))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        resolve_gamma(1.5, np.zeros(3))


def test_sinkhorn_method_agrees_with_exact_pot() -> None:
    rng = np.random.default_rng(7)
    grid_side, shift, n_img, d_in, d_sae, k = 5, 1, 4, 5, 6, 2
    sae = ReluSAE(torch.from_numpy(rng.normal(size=(d_in, d_sae))) - 0.3)
    ta = rng.normal(size=(n_img, grid_side**2, d_in)).astype(np.float32)
    tb = rng.normal(size=(n_img, grid_side**2, d_in)).astype(np.float32)
    res = compute_cds(sae, ta, tb, overlap_index(grid_side, shift), k=k, emd_method="sinkhorn", progress=False)
    expected = brute_force_cds(sae, ta, tb, grid_side, shift, k)
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(res.cds, expected, rtol=0.05, atol=1e-3)
