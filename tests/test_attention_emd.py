"""Attention-map EMD under SCC, against a brute-force ot.emd2 loop."""
from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from scopebench.analyses.attention_emd.accumulator import AttentionEMDAccumulator
from scopebench.pipeline.scc import overlap_index

P, S, PREFIX = 4, 1, 1


def random_attention(rng: np.random.Generator, batch: int, heads: int) -> np.ndarray:
    n_all = PREFIX + P * P
    logits = rng.normal(scale=2.0, size=(batch, heads, n_all, n_all))
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def brute_force(attn_a: np.ndarray, attn_b: np.ndarray, mask_a: np.ndarray) -> tuple[float, float, int, int]:
    ov = overlap_index(P, S)
    u, v = np.divmod(np.arange(ov.side**2), ov.side)
    cost = ot.dist(np.stack([u, v], 1).astype(float), np.stack([u, v], 1).astype(float), metric="euclidean")
    ka, kb = PREFIX + ov.in_a.numpy(), PREFIX + ov.in_b.numpy()
    out, non = [], []
    for b in range(attn_a.shape[0]):
        for h in range(attn_a.shape[1]):
            for c in range(ov.side**2):
                row_a, row_b = attn_a[b, h, ka[c], ka], attn_b[b, h, kb[c], kb]
                w = ot.emd2(row_a / row_a.sum(), row_b / row_b.sum(), cost)
                (out if mask_a[b, ov.in_a[c]] else non).append(w)
    return float(np.mean(out)), float(np.mean(non)), len(out), len(non)


def test_streamed_means_match_brute_force_split_by_view_a_outliers() -> None:
    rng = np.random.default_rng(0)
    attn_a, attn_b = random_attention(rng, 3, 2), random_attention(rng, 3, 2)
    mask_a = rng.random((3, P * P)) < 0.3
    acc = AttentionEMDAccumulator(overlap_index(P, S), PREFIX)
    acc.update(attn_a[:2], attn_b[:2], mask_a[:2])
    acc.update(torch.from_numpy(attn_a[2:]), torch.from_numpy(attn_b[2:]), torch.from_numpy(mask_a[2:]))
    mean_out, mean_non, counts = acc.result()
    exp_out, exp_non, n_out, n_non = brute_force(attn_a, attn_b, mask_a)
    assert mean_out == pytest.approx(exp_out, rel=1e-9) and mean_non == pytest.approx(exp_non, rel=1e-9)
    assert counts == {"outlier": n_out, "non_outlier": n_non, "skipped": 0}
    head_out, head_non = acc.per_head_means()
    assert head_out.shape == head_non.shape == (2,)
    first_head, _, _, _ = brute_force(attn_a[:, :1], attn_b[:, :1], mask_a)
    assert head_out[0] == pytest.approx(first_head, rel=1e-9)


def test_content_aligned_attention_scores_zero_and_a_moved_target_scores_its_distance() -> None:
    ov = overlap_index(P, S)
    rng = np.random.default_rng(1)
    attn_a, attn_b = random_attention(rng, 1, 1), random_attention(rng, 1, 1)
    qa, qb = PREFIX + ov.in_a.numpy(), PREFIX + ov.in_b.numpy()
    attn_b[np.ix_([0], [0], qb, qb)] = attn_a[np.ix_([0], [0], qa, qa)]  # same content-coordinate pattern
    acc = AttentionEMDAccumulator(ov, PREFIX)
    acc.update(attn_a, attn_b, np.zeros((1, P * P), bool))
    assert acc.result().mean_non_outlier == pytest.approx(0.0, abs=1e-12)
    moved_a, moved_b = np.zeros_like(attn_a), np.zeros_like(attn_b)
    moved_a[..., qa[0]] = 1.0  # every query attends to content cell (0, 0) in A ...
    moved_b[..., qb[2 * ov.side + 1]] = 1.0  # ... and to cell (2, 1) in B
    acc = AttentionEMDAccumulator(ov, PREFIX)
    acc.update(moved_a, moved_b, np.ones((1, P * P), bool))
    result = acc.result()
    assert result.mean_outlier == pytest.approx(math.sqrt(5)) and math.isnan(result.mean_non_outlier)


def test_rows_without_overlap_mass_are_skipped() -> None:
    rng = np.random.default_rng(2)
    ov = overlap_index(P, S)
    attn_a, attn_b = random_attention(rng, 1, 2), random_attention(rng, 1, 2)
    attn_b[0, 1, PREFIX + ov.in_b[0].item(), PREFIX + ov.in_b.numpy()] = 0.0  # all mass on prefix/outside keys
    acc = AttentionEMDAccumulator(ov, PREFIX)
    acc.update(attn_a, attn_b, np.zeros((1, P * P), bool))
    assert acc.result().counts == {"outlier": 0, "non_outlier": 2 * ov.side**2 - 1, "skipped": 1}


def test_bad_inputs_name_the_problem() -> None:
    acc = AttentionEMDAccumulator(overlap_index(P, S), PREFIX)
    attn = random_attention(np.random.default_rng(3), 1, 1)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        acc.update(attn, attn, np.zeros((1, P * P + PREFIX), bool))
    with pytest.raises(ValueError, match="N_all"):
        acc.update(attn[0], attn[0], np.zeros((1, P * P), bool))
    with pytest.raises(ValueError, match="update"):
        acc.result()


def test_sinkhorn_method_agrees_with_exact_pot() -> None:
    rng = np.random.default_rng(4)
    attn_a, attn_b = random_attention(rng, 1, 2), random_attention(rng, 1, 2)
    mask_a = rng.random((1, P * P)) < 0.4
    acc = AttentionEMDAccumulator(overlap_index(P, S), PREFIX, method="sinkhorn")
    acc.update(attn_a, attn_b, mask_a)
    mean_out, mean_non, _ = acc.result()
    exp_out, exp_non, _, _ = brute_force(attn_a, attn_b, mask_a)
    assert mean_out == pytest.approx(exp_out, rel=0.03) and mean_non == pytest.approx(exp_non, rel=0.03)
