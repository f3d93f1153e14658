"""Streaming reconstruction metrics of an SAE over all tokens (A) and outlier tokens (O).

FVU over a token set T is ``sum_t ||x_t - xhat_t||^2 / sum_t ||x_t - mu_T||^2`` with
``mu_T`` the per-dimension mean over T.  The centred denominator is computed in one
pass from float64 running sums: ``sum ||x - mu||^2 = sum ||x||^2 - ||sum x||^2 / n``.

Two numbers describe how an SAE codes the outlier tokens, the mechanism behind L0_O: the
top-1 share (how much of a token's squared code sits in its largest latent) and the shared
latents (how many latents fire on most outliers).  A few strong outlier latents, as the
paper's L0_O of 7-29 implies, give a high share and few shared latents; a broad weak code
(many latents, each partly along the outlier direction) gives a low share and an L0_O above
L0_A, as BatchTopK's on the planted default (README, "Fidelity of the planted default").
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from pydantic import BaseModel

from scopebench.sae.base import SparseAutoencoder

FVU_DEFINITION = (
    "FVU_T = sum_t ||x_t - xhat_t||^2 / sum_t ||x_t - mu_T||^2, mu_T = per-dimension mean over the token set T "
    "(A = all tokens, O = outlier tokens); pooled over T, not averaged per token or per batch. "
    "L0 = mean count of non-zero latents per token; CS = mean cosine(x_t, xhat_t). "
    "dead = latent never fires on T_A; dense = latent fires on more than 10% of T_A. "
    "Outlier code: top-1 share = mean over T_O of max_j a_tj^2 / sum_j a_tj^2 (tokens with a non-zero code); "
    "shared latents = latents that fire on more than half of T_O."
)
DENSE_FIRING_FRACTION = 0.10
SHARED_FIRING_FRACTION = 0.5


class ReconstructionMetrics(BaseModel):
    fvu_all: float
    fvu_outlier: float
    l0_all: float
    l0_outlier: float
    cos_all: float
    cos_outlier: float
    n_all: int
    n_outlier: int
    dead_fraction: float
    dense_fraction: float
    outlier_top1_share: float
    outlier_shared_latents: int
    definition: str = FVU_DEFINITION


class _TokenSetSums:
    """float64 running sums for one token set."""

    def __init__(self, d_in: int, d_sae: int, device: str | torch.device) -> None:
        self.n = 0
        self.sq_err = 0.0
        self.sq_norm = 0.0
        self.cos = 0.0
        self.fire_counts = torch.zeros(d_sae, dtype=torch.float64, device=device)  # tokens each latent fired on
        self.sum_x = torch.zeros(d_in, dtype=torch.float64, device=device)

    def add(self, x: torch.Tensor, xhat: torch.Tensor, codes: torch.Tensor) -> None:
        if x.shape[0] == 0:
            return
        self.n += x.shape[0]
        self.sq_err += float((x - xhat).pow(2).sum())
        self.sq_norm += float(x.pow(2).sum())
        self.sum_x += x.sum(0)
        self.cos += float(torch.nn.functional.cosine_similarity(x, xhat, dim=1, eps=1e-12).sum())
        self.fire_counts += (codes != 0).sum(0).double()

    def fvu(self) -> float:
        if self.n == 0:
            return math.nan
        centred = self.sq_norm - float(self.sum_x.pow(2).sum()) / self.n
        return self.sq_err / centred if centred > 0 else math.nan

    def mean(self, total: float) -> float:
        return total / self.n if self.n else math.nan

    def l0(self) -> float:
        """Mean active latents per token: every firing counted once, so the firing counts' total."""
        return self.mean(float(self.fire_counts.sum()))


class _OutlierSums(_TokenSetSums):
    """The outlier set's sums, with the shape of its codes (only outliers need it: [n, d_sae] work per batch)."""

    def __init__(self, d_in: int, d_sae: int, device: str | torch.device) -> None:
        super().__init__(d_in, d_sae, device)
        self.top1_share = 0.0  # sum over tokens with a non-zero code of max_j a_j^2 / sum_j a_j^2
        self.n_coded = 0

    def add(self, x: torch.Tensor, xhat: torch.Tensor, codes: torch.Tensor) -> None:
        super().add(x, xhat, codes)
        energy = codes.double().pow(2)
        total = energy.sum(1)
        coded = total > 0
        self.n_coded += int(coded.sum())
        self.top1_share += float((energy.amax(1)[coded] / total[coded]).sum())

    def mean_top1_share(self) -> float:
        return self.top1_share / self.n_coded if self.n_coded else math.nan


@torch.no_grad()
def reconstruction_metrics(
    sae: SparseAutoencoder,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: str = "cpu",
) -> ReconstructionMetrics:
    """Accumulate FVU, L0, cosine and latent firing over ``(x [n, d_in], outlier_mask [n] bool)`` batches."""
    def encoded():
        for x, mask in batches:
            if x.ndim != 2 or x.shape[1] != sae.d_in:
                raise ValueError(f"batch x must be [n, {sae.d_in}] (the SAE's d_in), got {tuple(x.shape)}")
            x = x.to(device=device, dtype=torch.float32)
            codes = sae.encode(x)
            yield x, sae.decode(codes), codes, mask
    return metrics_of_batches(encoded(), d_in=sae.d_in, d_sae=sae.d_sae, device=device)


def metrics_of_arrays(x: torch.Tensor, xhat: torch.Tensor, codes: torch.Tensor,
                      outlier_mask: torch.Tensor) -> ReconstructionMetrics:
    """The same metrics from plain arrays (any SAE, run by anyone): tokens, reconstructions, latent codes."""
    if x.ndim != 2 or xhat.shape != x.shape or codes.ndim != 2 or codes.shape[0] != x.shape[0]:
        raise ValueError(f"need x and xhat [n, d_in] and codes [n, d_sae], got {tuple(x.shape)}, "
                         f"{tuple(xhat.shape)}, {tuple(codes.shape)}")
    return metrics_of_batches([(x, xhat, codes, outlier_mask)], d_in=x.shape[1], d_sae=codes.shape[1],
                              device=str(x.device))


def metrics_of_batches(batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]], *,
                       d_in: int, d_sae: int, device: str = "cpu") -> ReconstructionMetrics:
    """The accumulation itself, over ``(x, xhat, codes, outlier_mask)`` batches (sums in float64)."""
    everything = _TokenSetSums(d_in, d_sae, device)
    outliers = _OutlierSums(d_in, d_sae, device)
    for x, xhat, codes, mask in batches:
        if mask.dtype != torch.bool or mask.shape != (x.shape[0],):
            raise ValueError(f"outlier_mask must be a bool tensor of shape ({x.shape[0]},), got {mask.dtype} {tuple(mask.shape)}")
        mask = mask.to(device)
        x64, xhat64 = x.to(device).double(), xhat.to(device).double()
        codes = codes.to(device)
        everything.add(x64, xhat64, codes)
        outliers.add(x64[mask], xhat64[mask], codes[mask])
    if everything.n == 0:
        raise ValueError("reconstruction_metrics got no tokens")
    fire_counts = everything.fire_counts
    firing_rate = fire_counts / everything.n
    return ReconstructionMetrics(
        fvu_all=everything.fvu(),
        fvu_outlier=outliers.fvu(),
        l0_all=everything.l0(),
        l0_outlier=outliers.l0(),
        cos_all=everything.mean(everything.cos),
        cos_outlier=outliers.mean(outliers.cos),
        n_all=everything.n,
        n_outlier=outliers.n,
        dead_fraction=float((fire_counts == 0).double().mean()),
        dense_fraction=float((firing_rate > DENSE_FIRING_FRACTION).double().mean()),
        outlier_top1_share=outliers.mean_top1_share(),
        outlier_shared_latents=int((outliers.fire_counts > SHARED_FIRING_FRACTION * outliers.n).sum()),
    )
