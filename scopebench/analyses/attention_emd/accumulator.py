"""Contextual instability of attention maps under SCC (paper Tables 7 and 9).

For each head and each query patch in the SCC overlap, the attention row restricted to
the overlap's patch keys (prefix keys dropped) is renormalised and compared between the
two views in content coordinates: W1 with Euclidean ground distance in patch units, not
divided by D.  Means are taken separately over outlier and non-outlier queries, with
outlier status read from view A.  Rows whose overlap mass is zero are skipped and counted.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from scopebench import distributed
from scopebench.emd import grid_w1
from scopebench.pipeline.scc import OverlapIndex, overlap_geometry


class AttentionEMD(NamedTuple):
    mean_outlier: float  # NaN when no outlier query was seen
    mean_non_outlier: float
    counts: dict[str, int]  # "outlier", "non_outlier" (head x query rows averaged), "skipped"


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def _check_attention(t: torch.Tensor, name: str) -> None:
    if t.dim() != 4 or t.shape[-1] != t.shape[-2]:
        raise ValueError(f"{name} must be attention probabilities [B, H, N_all, N_all], got {tuple(t.shape)}")


class AttentionEMDAccumulator:
    """Streams batches of attention maps of the two SCC views and averages their EMD."""

    def __init__(self, overlap: OverlapIndex, n_prefix: int, *, method: str = "exact", threads: int | None = None,
                 device: str | torch.device | None = None) -> None:
        if n_prefix < 0:
            raise ValueError(f"n_prefix must be >= 0 (number of CLS/register tokens), got {n_prefix}")
        self.overlap, self.n_prefix = overlap, n_prefix
        self.method, self.threads, self.device = method, threads, device
        self._sum: np.ndarray | None = None  # [H, 2] summed W1, column 0 non-outlier, 1 outlier
        self._count: np.ndarray | None = None  # [H, 2]
        self._skipped = 0

    def update(self, attn_a: np.ndarray | torch.Tensor, attn_b: np.ndarray | torch.Tensor,
               outlier_mask_a: np.ndarray | torch.Tensor) -> None:
        """Add one batch: attention of view A and B ``[B, H, N_all, N_all]``, outliers of A ``[B, N]``."""
        a, b = _as_tensor(attn_a), _as_tensor(attn_b)
        _check_attention(a, "attn_a")
        _check_attention(b, "attn_b")
        if a.shape != b.shape:
            raise ValueError(f"attn_a and attn_b differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        batch, heads, n_all, _ = a.shape
        overlap_geometry(self.overlap, n_all - self.n_prefix)
        mask = _as_tensor(outlier_mask_a).to("cpu", torch.bool)
        if mask.shape != (batch, n_all - self.n_prefix):
            raise ValueError(f"outlier_mask_a must be [B, N] = {(batch, n_all - self.n_prefix)} over patch tokens "
                             f"(prefix excluded), got {tuple(mask.shape)}")
        qa, qb = self.overlap.in_a + self.n_prefix, self.overlap.in_b + self.n_prefix
        rows_a = a[:, :, qa.to(a.device)][..., qa.to(a.device)].reshape(-1, qa.numel())  # [B*H*G, G]
        rows_b = b[:, :, qb.to(b.device)][..., qb.to(b.device)].reshape(-1, qb.numel())
        is_outlier = mask[:, self.overlap.in_a][:, None, :].expand(batch, heads, -1).reshape(-1).numpy()
        head = torch.arange(heads)[None, :, None].expand(batch, heads, qa.numel()).reshape(-1).numpy()
        if self._sum is None:
            self._sum, self._count = np.zeros((heads, 2)), np.zeros((heads, 2), dtype=np.int64)
        elif self._sum.shape[0] != heads:
            raise ValueError(f"batch has {heads} heads but earlier batches had {self._sum.shape[0]}")
        w1 = grid_w1(rows_a, rows_b, self.overlap.side, method=self.method, normalise=True,
                     threads=self.threads, device=self.device)
        ok = np.isfinite(w1)
        self._skipped += int((~ok).sum())
        np.add.at(self._sum, (head[ok], is_outlier[ok].astype(np.int64)), w1[ok])
        np.add.at(self._count, (head[ok], is_outlier[ok].astype(np.int64)), 1)

    def sum_over_ranks(self) -> None:
        """Replace this rank's sums and counts by their totals over a torchrun launch's ranks.

        Each rank streams its share of the images, then every rank calls this (a rank that saw
        no image contributes zeros).
        """
        mine = np.array([0 if self._sum is None else self._sum.shape[0]])
        heads = max(int(seen[0]) for seen in distributed.gather(mine, "attention EMD heads"))
        if heads == 0:
            return
        if self._sum is None:
            self._sum, self._count = np.zeros((heads, 2)), np.zeros((heads, 2), dtype=np.int64)
        self._sum = distributed.sum_over_ranks(self._sum, "attention EMD sums")
        self._count = distributed.sum_over_ranks(self._count, "attention EMD counts")
        self._skipped = int(distributed.sum_over_ranks(np.array([self._skipped]), "attention EMD skipped")[0])

    def per_head_means(self) -> tuple[np.ndarray, np.ndarray]:
        """``(outlier [H], non_outlier [H])`` mean W1 per head (NaN where a head saw no such query)."""
        if self._sum is None:
            raise ValueError("no attention maps accumulated yet; call update() first")
        with np.errstate(invalid="ignore", divide="ignore"):
            means = self._sum / self._count
        return means[:, 1], means[:, 0]

    def result(self) -> AttentionEMD:
        """Mean W1 over all heads and queries, separately for outlier and non-outlier queries."""
        if self._sum is None:
            raise ValueError("no attention maps accumulated yet; call update() first")
        total, count = self._sum.sum(0), self._count.sum(0)
        mean = [float(total[c] / count[c]) if count[c] else float("nan") for c in (0, 1)]
        return AttentionEMD(mean_outlier=mean[1], mean_non_outlier=mean[0],
                            counts={"outlier": int(count[1]), "non_outlier": int(count[0]),
                                    "skipped": self._skipped})
