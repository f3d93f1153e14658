"""Per-dimension feature standardisation with training-set statistics.

The map ``(x - mean) / std`` is fixed (buffers, not parameters), so a probe built as
``Standardize -> Linear`` is still a linear probe; it only conditions the optimisation.
Each dimension's variance is floored at ``VARIANCE_FLOOR`` times the mean variance so
that a dimension emptied by feature removal (variance ~ rounding error) is not blown up
to unit scale.

The probe functions accept a ``standardizer`` fitted elsewhere.  The removal experiments
pass the one fitted on the original (unedited) features to all three embeddings: fitted
on an edited embedding, z-scoring would scale whatever the removal left (the SAE error,
which still follows the removed content) back up to unit variance and undo the removal.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

VARIANCE_FLOOR = 1e-6


class Standardize(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @classmethod
    def identity(cls, dim: int) -> Standardize:
        return cls(torch.zeros(dim), torch.ones(dim))


def probe_standardize(enabled: bool, dim: int, given: Standardize | None,
                      fit: Callable[[], Standardize]) -> Standardize:
    """A probe's input map: identity when disabled, else ``given``, else ``fit()`` on its training split."""
    if not enabled:
        return Standardize.identity(dim)
    return given or fit()


def fit_standardize(features: torch.Tensor, chunk_rows: int = 256) -> Standardize:
    """Statistics over all leading dimensions of ``features [..., d]``, in chunks, in float64."""
    if features.ndim < 2 or features.shape[0] == 0:
        raise ValueError(f"need a non-empty [n, ..., d] feature array, got shape {tuple(features.shape)}")
    total = torch.zeros(features.shape[-1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for start in range(0, features.shape[0], chunk_rows):
        chunk = features[start : start + chunk_rows].reshape(-1, features.shape[-1]).to(torch.float64).cpu()
        total += chunk.sum(dim=0)
        total_sq += (chunk**2).sum(dim=0)
        count += chunk.shape[0]
    mean = total / count
    variance = (total_sq / count - mean**2).clamp_min(0)
    floor = VARIANCE_FLOOR * variance.mean().clamp_min(torch.finfo(torch.float64).tiny)
    return Standardize(mean, variance.clamp_min(floor).sqrt())
