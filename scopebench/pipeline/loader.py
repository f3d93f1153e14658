"""Loading for extraction: images decoded, resized and cut into views in DataLoader workers.

The forward loop (``scopebench.pipeline.extract.iter_forward``) asks for batches of model
input; with ``workers > 0`` they are built in worker processes while the device computes on
the previous batch (``prefetch_factor`` batches ahead per worker), collated into pinned memory
when the device is a GPU, and copied to it without blocking.  With ``workers = 0`` the same
code builds them in this process, one after the other.

Either way a batch holds exactly the same pixels: every image is decoded and resized on its own
(never as part of a batch, whose shape could change the arithmetic), the batches are fixed
before loading (:func:`batch_plan`), and a ``DataLoader`` hands them back in that order.  Workers
draw no random numbers (the SCC crops are fixed, sampled patch positions are a pure function
of ``(seed, index)`` computed in the main process), so the worker count never changes a number.
An SCC pair is cut from one decode of its image.

Everything a worker needs (the dataset, the rows, the view maker) is pickled only under a
``spawn``/``forkserver`` start method; the view makers here are plain dataclasses, so both work.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from scopebench.data.base import ImageDataset
from scopebench.pipeline.scc import scc, square_resize

#: one image ``[3, H, W]`` -> model input of each of its views, ``{view suffix: [3, S, S]}``
ViewMaker = Callable[[torch.Tensor], dict[str, torch.Tensor]]
PREFETCH_BATCHES = 2  # batches each worker keeps ready (DataLoader's prefetch_factor)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one): the default worker count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer (0 loads images in this process), got {workers!r}")
    return int(workers)


@dataclass(frozen=True)
class ResizedView:
    """The single view of plain extraction: the image centre-cropped and resized to ``size``."""

    size: int
    interpolation: str

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"": square_resize(image, self.size, self.interpolation)}


@dataclass(frozen=True)
class SCCViews:
    """Views A (``"_a"``) and B (``"_b"``) of ``scopebench.pipeline.scc.scc``, cut from one resize of the image."""

    shift: int
    patch_size: int
    grid_side: int
    interpolation: str

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        pair = scc(image, self.shift, patch_size=self.patch_size, grid_side=self.grid_side,
                   interpolation=self.interpolation)
        return {"_a": pair.view_a, "_b": pair.view_b}


class RowViews(Dataset):
    """Position ``k`` -> the views of dataset item ``rows[k]`` (what a worker computes)."""

    def __init__(self, dataset: ImageDataset, rows: np.ndarray, make_views: ViewMaker) -> None:
        self.dataset, self.rows, self.make_views = dataset, rows, make_views

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return self.make_views(self.dataset[int(self.rows[position])].image)


def stack_views(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch: each view's images stacked into ``[B, 3, S, S]``."""
    return {suffix: torch.stack([item[suffix] for item in items]) for suffix in items[0]}


def batch_plan(n_rows: int, batch_size: int, breaks: Sequence[int] = ()) -> list[list[int]]:
    """Positions ``0..n_rows-1`` in consecutive batches of at most ``batch_size``, restarting at each break.

    A break is a position where a batch must begin (the first row of a shard), so the batches of
    each shard are the ones a run over that shard alone would make.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = sorted({0, *(int(b) for b in breaks if 0 < b < n_rows)}) if n_rows else []
    plan = []
    for start, stop in zip(starts, [*starts[1:], n_rows]):
        plan += [list(range(first, min(first + batch_size, stop))) for first in range(start, stop, batch_size)]
    return plan


def load_views(dataset: ImageDataset, rows: np.ndarray, make_views: ViewMaker, batches: list[list[int]], *,
               workers: int, target: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """The batches of ``batches`` (positions into ``rows``) in order, each view already on ``target``.

    Close the iterator (or exhaust it) to stop the workers.
    """
    workers = min(check_workers(workers), len(batches))
    pin = target.type == "cuda"
    loader = DataLoader(RowViews(dataset, rows, make_views), batch_sampler=batches, num_workers=workers,
                        collate_fn=stack_views, pin_memory=pin, prefetch_factor=PREFETCH_BATCHES if workers else None)
    for views in loader:
        yield {suffix: pixels.to(target, non_blocking=pin) for suffix, pixels in views.items()}
