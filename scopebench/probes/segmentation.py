"""Semantic segmentation probe: a linear classifier on every patch token.

Logits ``[B, C, rows, cols]`` are upsampled bilinearly (``align_corners=False``) to the
label resolution and trained with pixel-wise cross-entropy that skips the ignore index;
the metric is mIoU (convention in :mod:`scopebench.probes.metrics`).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from scopebench.probes.config import SegmentationConfig
from scopebench.probes.metrics import image_confusion_matrices, miou_from_confusion
from scopebench.probes.standardize import Standardize, fit_standardize, probe_standardize
from scopebench.probes.trainer import Batch, ProbeResult, random_search, seeded_linear
from scopebench.probes.upsample import upsample_logits


@dataclass
class SegmentationSplit:
    tokens: torch.Tensor  # [n, rows, cols, d] float patch tokens (after removal)
    labels: torch.Tensor  # [n, H, W] integer class map; the config's ignore_index is skipped

    def __post_init__(self) -> None:
        self.tokens = torch.as_tensor(self.tokens)
        self.labels = torch.as_tensor(self.labels)
        if self.tokens.ndim != 4 or not self.tokens.is_floating_point():
            raise ValueError(
                f"tokens must be float [n, rows, cols, d] (reshape [n, N, d] to the patch grid), got "
                f"{self.tokens.dtype} {tuple(self.tokens.shape)}"
            )
        if self.labels.ndim != 3 or self.labels.shape[0] != self.tokens.shape[0] or self.labels.is_floating_point():
            raise ValueError(
                f"labels must be integer [n, H, W] with n = {self.tokens.shape[0]}, got "
                f"{self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.tokens.shape[0] == 0:
            raise ValueError("a segmentation split needs at least one image")
        self.labels = self.labels.long()


class PatchClassifier(nn.Module):
    """Per-patch linear classifier whose logits are upsampled to the label size."""

    def __init__(self, standardize: Standardize, linear: nn.Linear) -> None:
        super().__init__()
        self.standardize = standardize
        self.linear = linear

    def forward(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``tokens [B, rows, cols, d]`` -> logits ``[B, C, H, W]``."""
        return upsample_logits(self.linear(self.standardize(tokens)).permute(0, 3, 1, 2), size)


class SegmentationTask:
    metric_name = "miou"
    higher_is_better = True

    def __init__(self, train: SegmentationSplit, n_classes: int, config: SegmentationConfig,
                 standardizer: Standardize | None = None) -> None:
        self.n_classes = n_classes
        self.ignore_index = config.ignore_index
        self.dim = train.tokens.shape[-1]
        self.standardize = probe_standardize(config.standardize, self.dim, standardizer,
                                             lambda: fit_standardize(train.tokens))

    def build(self, generator: torch.Generator) -> nn.Module:
        return PatchClassifier(self.standardize, seeded_linear(self.dim, self.n_classes, generator))

    def loss(self, probe: nn.Module, batch: Batch) -> torch.Tensor:
        tokens, labels = batch
        logits = probe(tokens, tuple(labels.shape[-2:]))
        if bool((labels != self.ignore_index).any()):
            return F.cross_entropy(logits, labels, ignore_index=self.ignore_index)
        return logits.sum() * 0.0  # an all-ignored batch contributes no gradient (CE would be NaN)

    def item_scores(self, probe: nn.Module, batches: Iterator[Batch]) -> torch.Tensor:
        """Per image: its confusion matrix (``[n, C, C]``, see :func:`image_confusion_matrices`).

        Stored as int32 (an image's pixel count fits): ADE20K's 2,000 validation images with 150
        classes take 180 MB; sums over images promote to int64.
        """
        return torch.cat([image_confusion_matrices(probe(tokens, tuple(labels.shape[-2:])).argmax(dim=1), labels,
                                                   self.n_classes, self.ignore_index).to(torch.int32).cpu()
                          for tokens, labels in batches])

    def metric(self, scores: torch.Tensor) -> float:
        return miou_from_confusion(scores.sum(dim=0))


def train_segmentation_probe(
    train: SegmentationSplit,
    val: SegmentationSplit,
    test: SegmentationSplit | None = None,
    *,
    n_classes: int,
    config: SegmentationConfig | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    standardizer: Standardize | None = None,
) -> ProbeResult:
    """Random-searched per-patch linear probe; metric = mIoU (fraction) on val / test.

    The result's ``test_scores`` are the test images' confusion matrices under the chosen probe.

    ``standardizer`` replaces the statistics fitted on ``train`` (see :mod:`scopebench.probes.standardize`).
    """
    config = config or SegmentationConfig()
    splits = {"train": train, "val": val, **({"test": test} if test is not None else {})}
    for name, split in splits.items():
        if split.tokens.shape[-1] != train.tokens.shape[-1]:
            raise ValueError(f"{name} tokens have dim {split.tokens.shape[-1]}, train has {train.tokens.shape[-1]}")
        labelled = split.labels[split.labels != config.ignore_index]
        if labelled.numel() == 0:
            raise ValueError(f"{name} has no labelled pixel (all equal ignore_index={config.ignore_index})")
        if int(labelled.min()) < 0 or int(labelled.max()) >= n_classes:
            raise ValueError(
                f"{name} labels span [{int(labelled.min())}, {int(labelled.max())}] but must lie in "
                f"[0, {n_classes}) or equal ignore_index={config.ignore_index}; remap the dataset's ignore "
                "value to config.ignore_index"
            )
    task = SegmentationTask(train, n_classes, config, standardizer)
    return random_search(
        task,
        (train.tokens, train.labels),
        (val.tokens, val.labels),
        (test.tokens, test.labels) if test is not None else None,
        config,
        device=device,
        progress=progress,
    )
