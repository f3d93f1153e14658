"""The contract of every image dataset the suite reads (ImageNet, ADE20K, NYUd, scenes).

A dataset may also define ``target(index, field) -> value``: the ``field`` of item ``index`` (one of
:data:`TARGET_FIELDS`, the same value its :class:`Sample` holds, None when it has none) read without
decoding the image.  Probes read their targets through :func:`read_target`, which falls back to the
whole sample, so a dataset without it still works; with it, a probe's 2,304 planted scenes or
50,000 ImageNet labels cost no image decode on top of the extraction's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class Sample:
    image: torch.Tensor  # [3, H, W] float in [0, 1]
    label: int | None = None  # image-level class
    segmentation: torch.Tensor | None = None  # [H, W] long, -1 / 255 = ignore per dataset doc
    depth: torch.Tensor | None = None  # [H, W] float metres (or planted units), 0 = invalid


@runtime_checkable
class ImageDataset(Protocol):
    @property
    def identity(self) -> str:
        """Stable identity of the content (name, split, root, file-list hash): part of cache keys."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...


#: the fields of :class:`Sample` a probe can predict
TARGET_FIELDS = ("label", "segmentation", "depth")


def read_target(dataset: ImageDataset, index: int, field: str) -> Any:
    """``dataset[index].<field>``, through the dataset's ``target(index, field)`` when it has one (no image decode)."""
    if field not in TARGET_FIELDS:
        raise ValueError(f"unknown target field {field!r}; use one of {', '.join(TARGET_FIELDS)}")
    reader = getattr(dataset, "target", None)
    return reader(index, field) if reader is not None else getattr(dataset[index], field)
