"""Paired bootstrap intervals for the change of a probe score between two embeddings.

Two probes (e.g. on the original tokens and on tokens with a feature group removed) are
scored on the same test items.  How sure a measured change is depends on how many test
items there are, so a fixed tolerance cannot say it; the bootstrap can.  Each resample
draws ``n`` of the ``n`` test items with replacement and is applied to both probes' per-item
scores at once (paired: an item that is hard for one probe is usually hard for the other, and
the interval of the difference is much narrower than those of the two scores alone).  The
interval is the percentile interval of the resampled differences, Efron & Tibshirani (1993),
*An Introduction to the Bootstrap*, ch. 13: the ``(1 - confidence) / 2`` and
``(1 + confidence) / 2`` quantiles of the ``B`` differences (linear interpolation between
order statistics, as ``numpy.percentile``).

It measures test-set sampling only: the probes are trained once, so training noise (the
random search, the SGD seed) is not in the interval.

All ``B`` resamples are one ``[B, n]`` matrix of item indices (``8 B n`` bytes: 0.8 GB for
ImageNet's 50,000 validation images at ``B = 2000``); a statistic maps the per-item scores and
that matrix to the ``B`` resampled values of its metric without a loop over resamples.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from scopebench.probes.config import BootstrapConfig

Statistic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(per-item scores [n, ...], indices [B, n]) -> [B]`` float64: the metric of each resample."""


def resampled_indices(n: int, resamples: int, seed: int) -> torch.Tensor:
    """``[resamples, n]`` long: each row draws ``n`` item indices from ``[0, n)`` with replacement."""
    if n < 1 or resamples < 1:
        raise ValueError(f"a bootstrap needs at least one item and one resample, got n={n}, resamples={resamples}")
    return torch.randint(n, (resamples, n), generator=torch.Generator().manual_seed(seed))


def resampled_top1(correct: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy (fraction) of each resample of per-item correctness ``correct [n]`` (bool or 0/1)."""
    hits = (correct != 0)[indices.to(correct.device)].sum(dim=1)  # exact integer counts; a bool gather: n B bytes
    return hits.double().cpu() / indices.shape[1]


def resampled_miou(confusions: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """mIoU (fraction) of each resample of per-image confusion matrices ``confusions [n, C, C]``.

    A resample's confusion matrix is the sum of its images' matrices (an image drawn twice
    counts twice); mIoU follows :func:`scopebench.probes.metrics.miou_from_confusion`: the
    mean IoU over classes present in its prediction or ground truth (NaN if none is).
    """
    n, n_classes = confusions.shape[0], confusions.shape[-1]
    indices = indices.to(confusions.device)
    counts = torch.zeros(indices.shape[0], n, dtype=torch.float64, device=confusions.device)
    counts.scatter_add_(1, indices, torch.ones_like(indices, dtype=torch.float64))
    confusion = (counts @ confusions.reshape(n, -1).double()).reshape(-1, n_classes, n_classes)
    tp = confusion.diagonal(dim1=1, dim2=2)
    union = confusion.sum(dim=1) + confusion.sum(dim=2) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp_min(1.0), torch.zeros_like(tp))
    return (iou.sum(dim=1) / present.sum(dim=1)).cpu()


def paired_differences(original: torch.Tensor, changed: torch.Tensor, statistic: Statistic,
                       indices: torch.Tensor) -> torch.Tensor:
    """``[B]``: ``statistic(changed) - statistic(original)`` on the same resampled items (row of ``indices``)."""
    if original.shape != changed.shape:
        raise ValueError(f"paired scores must describe the same test items in the same order, got shapes "
                         f"{tuple(original.shape)} and {tuple(changed.shape)}")
    if indices.ndim != 2 or indices.shape[1] != original.shape[0]:
        raise ValueError(f"indices must be [B, n] with n = {original.shape[0]} items, got {tuple(indices.shape)}")
    return statistic(changed, indices) - statistic(original, indices)


def percentile_interval(samples: torch.Tensor, confidence: float) -> tuple[float, float]:
    """The ``confidence`` percentile interval ``(lo, hi)`` of bootstrap ``samples [B]``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    tail = (1.0 - confidence) / 2.0
    lo, hi = torch.quantile(samples.double(), torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return float(lo), float(hi)


def paired_interval(original: torch.Tensor, changed: torch.Tensor, statistic: Statistic,
                    config: BootstrapConfig) -> tuple[float, float]:
    """Percentile interval of ``statistic(changed) - statistic(original)`` over paired resamples of the items."""
    indices = resampled_indices(original.shape[0], config.resamples, config.seed)
    return percentile_interval(paired_differences(original, changed, statistic, indices), config.confidence)
