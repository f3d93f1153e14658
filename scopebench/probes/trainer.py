"""Random-search training shared by the three probes (supplement section C).

Each trial samples a learning rate and a weight decay log-uniformly from the config's
ranges, trains a fresh probe with SGD (momentum) under a cosine-annealed learning rate
(annealed per step over all epochs, to zero), and scores it on the validation split.
The trial with the best validation metric is kept and, if a test split is given,
scored on it.  Trials whose loss becomes non-finite are recorded as diverged.

A task scores a split item by item (a test image's correctness, its confusion matrix, its
RMSE) and reduces those to its metric; the test split's per-item scores are kept in the
result so that a test of a difference between two probes can resample the test images.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from scopebench.device import resolve_device
from scopebench.probes.config import ProbeConfig

Batch = tuple[torch.Tensor, ...]


class ProbeTask(Protocol):
    """What the trainer needs from a task: a fresh probe, a loss, and an evaluation."""

    metric_name: str
    higher_is_better: bool

    def build(self, generator: torch.Generator) -> nn.Module: ...

    def loss(self, probe: nn.Module, batch: Batch) -> torch.Tensor: ...

    def item_scores(self, probe: nn.Module, batches: Iterator[Batch]) -> torch.Tensor:
        """Per-item scores of a split, in the split's order (the first dimension indexes its items)."""
        ...

    def metric(self, scores: torch.Tensor) -> float:
        """The split's metric from its per-item scores."""
        ...


@dataclass(frozen=True)
class Trial:
    lr: float
    weight_decay: float
    val_metric: float  # NaN when the trial diverged
    diverged: bool


@dataclass
class ProbeResult:
    """Outcome of a random search: the chosen trial's metrics, its hyperparameters, all trials."""

    metric_name: str
    higher_is_better: bool
    val_metric: float
    test_metric: float | None
    lr: float
    weight_decay: float
    trials: list[Trial]
    config: dict[str, Any]
    probe: nn.Module = field(repr=False)  # the chosen trained probe, on the CPU
    test_scores: torch.Tensor | None = field(default=None, repr=False)  # per test item, on the CPU (task.item_scores)


def iter_batches(
    split: Sequence[torch.Tensor], batch_size: int, device: torch.device, order: torch.Tensor | None = None
) -> Iterator[Batch]:
    """Mini-batches of aligned tensors on ``device``; floating tensors are cast to float32."""
    n = split[0].shape[0]
    for start in range(0, n, batch_size):
        rows = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
        yield tuple(
            t[rows].to(device=device, dtype=torch.float32 if t.is_floating_point() else t.dtype) for t in split
        )


def sample_hyperparameters(config: ProbeConfig) -> list[tuple[float, float]]:
    """``(lr, weight_decay)`` per trial, log-uniform, reproducible from ``config.seed``."""
    rng = np.random.default_rng(config.seed)

    def log_uniform(bounds: tuple[float, float]) -> float:
        return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))

    return [(log_uniform(config.lr_range), log_uniform(config.weight_decay_range)) for _ in range(config.trials)]


def _train_trial(
    task: ProbeTask,
    train: Sequence[torch.Tensor],
    config: ProbeConfig,
    lr: float,
    weight_decay: float,
    trial_seed: int,
    device: torch.device,
    progress: bool,
) -> tuple[nn.Module, bool]:
    """Train one probe; returns it and whether its loss became non-finite."""
    generator = torch.Generator().manual_seed(trial_seed)
    probe = task.build(generator).to(device)
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=config.momentum, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(train[0].shape[0] / config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    probe.train()
    for _ in tqdm(range(config.epochs), desc=f"lr={lr:.2g} wd={weight_decay:.2g}", leave=False, disable=not progress):
        order = torch.randperm(train[0].shape[0], generator=generator)
        for batch in iter_batches(train, config.batch_size, device, order):
            loss = task.loss(probe, batch)
            if not torch.isfinite(loss):
                return probe, True
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return probe, False


@torch.no_grad()
def _evaluate(task: ProbeTask, probe: nn.Module, split: Sequence[torch.Tensor], batch_size: int,
              device: torch.device) -> tuple[float, torch.Tensor]:
    """``(metric, per-item scores)`` of a trained probe on one split."""
    scores = task.item_scores(probe, iter_batches(split, batch_size, device))
    return task.metric(scores), scores


def _is_better(candidate: float, incumbent: float | None, higher_is_better: bool) -> bool:
    if incumbent is None:
        return True
    return candidate > incumbent if higher_is_better else candidate < incumbent


def random_search(
    task: ProbeTask,
    train: Sequence[torch.Tensor],
    val: Sequence[torch.Tensor],
    test: Sequence[torch.Tensor] | None,
    config: ProbeConfig,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ProbeResult:
    """Run ``config.trials`` trials of ``task`` and keep the best on ``val``."""
    target = resolve_device(device)
    trials: list[Trial] = []
    best_probe: nn.Module | None = None
    best_metric: float | None = None
    best_index = -1
    for index, (lr, weight_decay) in enumerate(
        tqdm(sample_hyperparameters(config), desc=f"{task.metric_name} probe trials", disable=not progress)
    ):
        probe, diverged = _train_trial(
            task, train, config, lr, weight_decay, config.seed * 1_000_003 + index, target, progress
        )
        metric = float("nan")
        if not diverged:
            probe.eval()
            metric, _ = _evaluate(task, probe, val, config.batch_size, target)
            diverged = not math.isfinite(metric)
        trials.append(Trial(lr=lr, weight_decay=weight_decay, val_metric=metric, diverged=diverged))
        if not diverged and _is_better(metric, best_metric, task.higher_is_better):
            best_probe, best_metric, best_index = probe, metric, index
    if best_probe is None or best_metric is None:
        raise RuntimeError(
            f"all {config.trials} {task.metric_name} probe trials diverged (non-finite loss) with lr in "
            f"{config.lr_range}; lower lr_range or set standardize=True"
        )
    test_metric = test_scores = None
    if test is not None:
        test_metric, test_scores = _evaluate(task, best_probe, test, config.batch_size, target)
    chosen = trials[best_index]
    return ProbeResult(
        metric_name=task.metric_name,
        higher_is_better=task.higher_is_better,
        val_metric=best_metric,
        test_metric=test_metric,
        lr=chosen.lr,
        weight_decay=chosen.weight_decay,
        trials=trials,
        config=config.model_dump(mode="json"),
        probe=best_probe.cpu(),
        test_scores=None if test_scores is None else test_scores.cpu(),
    )


def seeded_linear(d_in: int, d_out: int, generator: torch.Generator) -> nn.Linear:
    """``nn.Linear`` with PyTorch's default uniform initialisation, drawn from ``generator``."""
    layer = nn.Linear(d_in, d_out)
    bound = 1.0 / math.sqrt(d_in)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(d_out, d_in, generator=generator) * 2 * bound - bound)
        layer.bias.copy_(torch.rand(d_out, generator=generator) * 2 * bound - bound)
    return layer
