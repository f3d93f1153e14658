"""Measured extraction speed: images per second through the forward loop, for planning a run.

:func:`images_per_second` times :func:`scopebench.pipeline.extract.iter_forward` (loading in
workers, the forward at a precision, results copied back to the host as extraction does) on
the first images of a dataset, after one untimed batch that starts the workers and warms the
device.  It writes nothing; ``scopebench plan`` scales it to a run's image counts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from scopebench.backbones.base import Backbone
from scopebench.data.base import ImageDataset
from scopebench.device import resolve_device
from scopebench.pipeline.extract import iter_forward, plain_view, scc_views
from scopebench.precision import DEFAULT_PRECISION


@dataclass(frozen=True)
class Throughput:
    images: int  # images timed (the warm-up batch excluded)
    seconds: float
    workers: int
    precision: str
    device: str

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(backbone: Backbone, dataset: ImageDataset, *, n_images: int, batch_size: int = 32,
                      workers: int = 0, precision: str = DEFAULT_PRECISION, device: str | torch.device = "cpu",
                      shift: int | None = None, attention: bool = False) -> Throughput:
    """Extraction speed of ``backbone`` on ``dataset``'s first ``batch_size + n_images`` images.

    ``shift`` measures SCC extraction (two views per image) instead of plain tokens.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    total = batch_size + n_images
    if total > len(dataset):
        raise ValueError(f"the dataset has {len(dataset)} images; timing {n_images} after a warm-up batch of "
                         f"{batch_size} needs {total}")
    target = resolve_device(device)
    mover = getattr(backbone, "to", None)
    if callable(mover):
        mover(target)
    views = plain_view(backbone) if shift is None else scc_views(backbone, shift)
    rows = np.arange(total)
    with torch.inference_mode():
        forward = iter_forward(backbone, dataset, rows, views, batch_size, target, attention, workers=workers,
                               precision=precision, breaks=[batch_size])
        try:
            for batch_rows, outputs in forward:
                for out in outputs.values():
                    out.tokens.float().cpu()  # extraction copies every batch back to the host
                if batch_rows[0] == 0:  # the warm-up batch: workers started, device warm
                    _synchronise(target)
                    start = time.perf_counter()
            _synchronise(target)
            seconds = time.perf_counter() - start
        finally:
            forward.close()
    return Throughput(images=n_images, seconds=seconds, workers=workers, precision=precision, device=str(target))
