"""Image classification probe: pooled features ``[n, d]`` -> linear -> top-1 accuracy.

The features are the global average pool of the patch tokens after feature-group
removal (see :func:`scopebench.analyses.removal_probes.removal.remove_group_pooled`).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from scopebench.probes.config import ClassificationConfig
from scopebench.probes.standardize import Standardize, fit_standardize, probe_standardize
from scopebench.probes.trainer import Batch, ProbeResult, random_search, seeded_linear


@dataclass
class ClassificationSplit:
    features: torch.Tensor  # [n, d] float (any float dtype; cast per batch)
    labels: torch.Tensor  # [n] long in [0, n_classes)

    def __post_init__(self) -> None:
        self.features = torch.as_tensor(self.features)
        self.labels = torch.as_tensor(self.labels)
        if self.features.ndim != 2 or not self.features.is_floating_point():
            raise ValueError(f"features must be a float [n, d] array, got {self.features.dtype} {tuple(self.features.shape)}")
        if self.labels.shape != self.features.shape[:1] or self.labels.is_floating_point():
            raise ValueError(
                f"labels must be integer [n] with n = {self.features.shape[0]} (one per feature row), "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.features.shape[0] == 0:
            raise ValueError("a classification split needs at least one sample")
        self.labels = self.labels.long()


class ClassificationTask:
    metric_name = "top1"
    higher_is_better = True

    def __init__(self, train: ClassificationSplit, n_classes: int, standardize: bool,
                 standardizer: Standardize | None = None) -> None:
        self.n_classes = n_classes
        self.dim = train.features.shape[1]
        self.standardize = probe_standardize(standardize, self.dim, standardizer,
                                             lambda: fit_standardize(train.features))

    def build(self, generator: torch.Generator) -> nn.Module:
        return nn.Sequential(self.standardize, seeded_linear(self.dim, self.n_classes, generator))

    def loss(self, probe: nn.Module, batch: Batch) -> torch.Tensor:
        features, labels = batch
        return F.cross_entropy(probe(features), labels)

    def item_scores(self, probe: nn.Module, batches: Iterator[Batch]) -> torch.Tensor:
        """Per sample: whether its arg-max class is its label (bool ``[n]``)."""
        return torch.cat([(probe(features).argmax(dim=1) == labels).cpu() for features, labels in batches])

    def metric(self, scores: torch.Tensor) -> float:
        return int(scores.sum()) / scores.numel()


def _check_labels(split: ClassificationSplit, name: str, n_classes: int) -> None:
    low, high = int(split.labels.min()), int(split.labels.max())
    if low < 0 or high >= n_classes:
        raise ValueError(f"{name} labels span [{low}, {high}] but must lie in [0, {n_classes}) (n_classes)")


def train_classification_probe(
    train: ClassificationSplit,
    val: ClassificationSplit,
    test: ClassificationSplit | None = None,
    *,
    n_classes: int | None = None,
    config: ClassificationConfig | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    standardizer: Standardize | None = None,
) -> ProbeResult:
    """Random-searched linear classifier; metric = top-1 accuracy (fraction) on val / test.

    The result's ``test_scores`` say which test samples the chosen probe classifies correctly.

    ``n_classes`` defaults to ``1 + max label`` over the given splits.  ``standardizer``
    replaces the statistics fitted on ``train`` (see :mod:`scopebench.probes.standardize`).
    """
    config = config or ClassificationConfig()
    splits = {"train": train, "val": val, **({"test": test} if test is not None else {})}
    for name, split in splits.items():
        if split.features.shape[1] != train.features.shape[1]:
            raise ValueError(f"{name} features have dim {split.features.shape[1]}, train has {train.features.shape[1]}")
    if n_classes is None:
        n_classes = 1 + max(int(split.labels.max()) for split in splits.values())
    for name, split in splits.items():
        _check_labels(split, name, n_classes)
    task = ClassificationTask(train, n_classes, config.standardize, standardizer)
    return random_search(
        task,
        (train.features, train.labels),
        (val.features, val.labels),
        (test.features, test.labels) if test is not None else None,
        config,
        device=device,
        progress=progress,
    )
