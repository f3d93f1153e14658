"""Views of a dataset: an index subset, and the paper's one-image-per-class sample.

Both keep a derived identity (the parent's identity plus the selection), so cache keys
of a subset never collide with those of its parent or of another subset.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from scopebench.data.base import ImageDataset, Sample, read_target


class Subset:
    """The images of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: ImageDataset, indices: Sequence[int], *, description: str = "subset") -> None:
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        size = len(dataset)
        bad = [i for i in self.indices if not 0 <= i < size]
        if bad:
            raise IndexError(f"subset indices {bad[:5]} out of range for a dataset of {size} images "
                             f"({dataset.identity})")
        digest = hashlib.sha256(",".join(map(str, self.indices)).encode()).hexdigest()[:16]
        self._identity = f"{dataset.identity}|{description}:{len(self.indices)}:{digest}"

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def labels(self) -> list[int | None]:
        parent = _labels(self.dataset, progress=False)
        return [parent[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return self.dataset[self.indices[index]]

    def target(self, index: int, field: str) -> Any:
        return read_target(self.dataset, self.indices[index], field)


def subset(dataset: ImageDataset, indices: Sequence[int]) -> Subset:
    """``dataset`` restricted to ``indices`` (order kept, duplicates allowed)."""
    return Subset(dataset, indices)


def _labels(dataset: ImageDataset, *, progress: bool) -> list[int | None]:
    """Image-level labels, from a cheap ``labels`` attribute when the dataset has one."""
    cheap = getattr(dataset, "labels", None)
    if cheap is not None:
        return list(cheap)
    return [dataset[i].label for i in tqdm(range(len(dataset)), desc="reading labels", disable=not progress)]


def one_per_class(dataset: ImageDataset, n: int, seed: int, *, progress: bool = False) -> Subset:
    """``n`` images of ``n`` distinct classes, one random image each (the paper's 1,000-image set).

    When the dataset has more than ``n`` classes, the ``n`` classes are drawn at random
    too.  Images are ordered by class index.  Deterministic in ``seed``.
    """
    labels = _labels(dataset, progress=progress)
    if any(label is None for label in labels):
        raise ValueError(f"one_per_class needs image-level labels, but {dataset.identity} has unlabelled images; "
                         "use subset() with explicit indices instead")
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    classes = sorted(by_class)
    if not 1 <= n <= len(classes):
        raise ValueError(f"one_per_class asked for n={n} images but {dataset.identity} has {len(classes)} "
                         f"classes; choose 1 <= n <= {len(classes)}")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(classes, size=n, replace=False).tolist()) if n < len(classes) else classes
    indices = [by_class[c][int(rng.integers(len(by_class[c])))] for c in chosen]
    return Subset(dataset, indices, description=f"one_per_class(n={n},seed={seed})")
