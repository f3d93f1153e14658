"""Monocular depth probe (supplement section C).

Features: the global token (CLS, kept unmodified by removal; for backbones without one
the caller passes the mean patch token) concatenated to every patch token.  A linear
map gives logits over ``n_bins`` uniform depth bins of ``[min_depth, max_depth]``; the
depth is the softmax-weighted sum of the bin centres; training uses the scale-invariant
log loss, evaluation the RMSE (conventions in :mod:`scopebench.probes.metrics`).

The paper upsamples the features bilinearly to the depth-map size before the linear
map.  Bilinear interpolation takes convex combinations of grid values and a linear map
(with bias) commutes with convex combinations, so we apply the linear map on the patch
grid and upsample the ``n_bins`` logits instead: identical output, far less compute.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from scopebench.probes.config import DepthConfig
from scopebench.probes.metrics import per_image_rmse, scale_invariant_loss
from scopebench.probes.standardize import Standardize, fit_standardize, probe_standardize
from scopebench.probes.trainer import Batch, ProbeResult, random_search, seeded_linear
from scopebench.probes.upsample import upsample_logits


@dataclass
class DepthSplit:
    tokens: torch.Tensor  # [n, rows, cols, d] float patch tokens (after removal)
    global_tokens: torch.Tensor  # [n, d] CLS token (or mean patch token when there is no CLS)
    depth: torch.Tensor  # [n, H, W] float ground-truth depth; <= 0 marks invalid pixels

    def __post_init__(self) -> None:
        self.tokens = torch.as_tensor(self.tokens)
        self.global_tokens = torch.as_tensor(self.global_tokens)
        self.depth = torch.as_tensor(self.depth)
        if self.tokens.ndim != 4 or not self.tokens.is_floating_point():
            raise ValueError(
                f"tokens must be float [n, rows, cols, d] (reshape [n, N, d] to the patch grid), got "
                f"{self.tokens.dtype} {tuple(self.tokens.shape)}"
            )
        n, d = self.tokens.shape[0], self.tokens.shape[-1]
        if self.global_tokens.shape != (n, d) or not self.global_tokens.is_floating_point():
            raise ValueError(
                f"global_tokens must be float [n, d] = [{n}, {d}] (the CLS token, or the mean patch token "
                f"for backbones without one), got {self.global_tokens.dtype} {tuple(self.global_tokens.shape)}"
            )
        if self.depth.ndim != 3 or self.depth.shape[0] != n or not self.depth.is_floating_point():
            raise ValueError(f"depth must be float [n, H, W] with n = {n}, got {self.depth.dtype} {tuple(self.depth.shape)}")
        if n == 0:
            raise ValueError("a depth split needs at least one image")
        if not bool((self.depth > 0).any()):
            raise ValueError("depth split has no valid pixel (depth > 0)")


def bin_centres(config: DepthConfig) -> torch.Tensor:
    """Centres of ``n_bins`` equal-width bins covering ``[min_depth, max_depth]``."""
    width = (config.max_depth - config.min_depth) / config.n_bins
    return config.min_depth + width * (torch.arange(config.n_bins, dtype=torch.float32) + 0.5)


class DepthBinsProbe(nn.Module):
    """Linear map to depth-bin logits on the patch grid, upsampled, softmax-averaged."""

    def __init__(self, standardize: Standardize, linear: nn.Linear, centres: torch.Tensor) -> None:
        super().__init__()
        self.standardize = standardize
        self.linear = linear
        self.register_buffer("centres", centres)

    def logits(self, tokens: torch.Tensor, global_tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Bin logits ``[B, H, W, n_bins]`` of ``[global token, patch token]`` at every patch, upsampled.

        The linear map of the concatenation is the sum of its two halves' maps, so the global
        token's half is computed once per image instead of once per patch: the same logits
        for half the multiply-adds of the concatenated input.  The bins stay the last (contiguous)
        dimension, so the softmax and the sum over the bin centres read them without a copy.
        """
        d = global_tokens.shape[-1]
        mean, std, weight = self.standardize.mean, self.standardize.std, self.linear.weight
        per_image = F.linear((global_tokens - mean[:d]) / std[:d], weight[:, :d], self.linear.bias)
        per_patch = F.linear((tokens - mean[d:]) / std[d:], weight[:, d:])
        grid = per_patch + per_image[:, None, None, :]  # [B, rows, cols, n_bins]
        return upsample_logits(grid.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)

    def forward(self, tokens: torch.Tensor, global_tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Depth ``[B, H, W]``."""
        return self.logits(tokens, global_tokens, size).softmax(dim=-1) @ self.centres


def fit_depth_standardize(split: DepthSplit) -> Standardize:
    """Statistics of the probe's input ``[global token, patch token]``, fitted on ``split``."""
    patch, cls = fit_standardize(split.tokens), fit_standardize(split.global_tokens)
    return Standardize(torch.cat([cls.mean, patch.mean]), torch.cat([cls.std, patch.std]))


class DepthTask:
    metric_name = "rmse"
    higher_is_better = False

    def __init__(self, train: DepthSplit, config: DepthConfig, standardizer: Standardize | None = None) -> None:
        self.config = config
        self.dim = 2 * train.tokens.shape[-1]
        self.standardize = probe_standardize(config.standardize, self.dim, standardizer,
                                             lambda: fit_depth_standardize(train))

    def build(self, generator: torch.Generator) -> nn.Module:
        linear = seeded_linear(self.dim, self.config.n_bins, generator)
        return DepthBinsProbe(self.standardize, linear, bin_centres(self.config))

    def loss(self, probe: nn.Module, batch: Batch) -> torch.Tensor:
        tokens, global_tokens, depth = batch
        valid_images = (depth > 0).flatten(1).any(dim=1)
        if not bool(valid_images.any()):
            return probe.linear.bias.sum() * 0.0  # no valid pixel in this batch: no gradient
        prediction = probe(tokens, global_tokens, tuple(depth.shape[-2:]))
        return scale_invariant_loss(prediction, depth, lam=self.config.si_lambda, sqrt=self.config.si_sqrt)

    def item_scores(self, probe: nn.Module, batches: Iterator[Batch]) -> torch.Tensor:
        """Per image: its RMSE (NaN for an image without valid pixels)."""
        return torch.cat([per_image_rmse(probe(t, g, tuple(d.shape[-2:])), d).cpu() for t, g, d in batches])

    def metric(self, scores: torch.Tensor) -> float:
        return scores[~scores.isnan()].mean().item()


def train_depth_probe(
    train: DepthSplit,
    val: DepthSplit,
    test: DepthSplit | None = None,
    *,
    config: DepthConfig | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    standardizer: Standardize | None = None,
) -> ProbeResult:
    """Random-searched depth-bin probe; metric = RMSE (depth units) on val / test.

    ``standardizer`` replaces the statistics fitted on ``train`` (see :mod:`scopebench.probes.standardize`).
    """
    config = config or DepthConfig()
    splits = {"train": train, "val": val, **({"test": test} if test is not None else {})}
    for name, split in splits.items():
        if split.tokens.shape[-1] != train.tokens.shape[-1]:
            raise ValueError(f"{name} tokens have dim {split.tokens.shape[-1]}, train has {train.tokens.shape[-1]}")
    task = DepthTask(train, config, standardizer)
    return random_search(
        task,
        (train.tokens, train.global_tokens, train.depth),
        (val.tokens, val.global_tokens, val.depth),
        (test.tokens, test.global_tokens, test.depth) if test is not None else None,
        config,
        device=device,
        progress=progress,
    )
