"""Which images each bench stage uses, per backbone (the planted scenes or the real datasets).

Stages ("purposes"): ``train`` (SAE training), ``eval`` (reconstruction, tau),
``scc`` (CDS, and awCDS on the same images), ``attention`` (attention EMD), and ``probe-<task>-<split>`` with task in
cls / seg / depth and split in train / val / test.  Real datasets live under one data
root (``--data-root`` or ``$SCOPEBENCH_DATA``)::

    <root>/imagenet/{train,val}/<wnid>/*.JPEG
    <root>/ade20k/ADEChallengeData2016/{images,annotations}/{training,validation}/
    <root>/nyud/{train,test}/{rgb,depth}/<name>.png

Probe splits on real data: validation is a seeded part of the task's *training* split
(ImageNet train, ADE20K training, NYUd train), probe training takes the rest of that split
up to its count, and test is the task's evaluation split (ImageNet val, ADE20K validation,
NYUd test), whole when it holds no more images than asked.  So the three never overlap, and
the small evaluation splits of ADE20K (2,000) and NYUd (654) are used in full for test.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scopebench.backbones.sources import get_source
from scopebench.backbones.spec import BackboneSpec
from scopebench.suite.scales import BenchScale
from scopebench.data.base import ImageDataset
from scopebench.data.subsets import one_per_class, subset
from scopebench.data.scenes import SyntheticScenes

# Distinct seeds keep the planted stages on disjoint scenes.
_SCENE_SEEDS = {"train": 1, "eval": 2, "scc": 3, "attention": 4, "probe-train": 5, "probe-val": 6, "probe-test": 7}


class DatasetUnavailable(FileNotFoundError):
    """A real dataset is not on this machine; the message says where it is expected."""


def _count(purpose: str, scale: BenchScale) -> int:
    if purpose.startswith("probe-"):
        _, task, split = purpose.split("-")
        return scale.removal_probes.images(task, split)
    return {"train": scale.train_images, "eval": scale.reconstruction.images, "scc": scale.cds.images,
            "attention": scale.attention_emd.images}[purpose]


def _check_purpose(purpose: str) -> None:
    parts = purpose.split("-")
    ok = purpose in ("train", "eval", "scc", "attention") or (
        len(parts) == 3 and parts[0] == "probe" and parts[1] in ("cls", "seg", "depth")
        and parts[2] in ("train", "val", "test"))
    if not ok:
        raise ValueError(f"unknown bench purpose {purpose!r}: use train, eval, scc, attention or "
                         "probe-<cls|seg|depth>-<train|val|test>")


def data_root(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    env = os.environ.get("SCOPEBENCH_DATA")
    return Path(env) if env else None


def bench_dataset(spec: BackboneSpec, purpose: str, scale: BenchScale, root: Path | None) -> ImageDataset:
    _check_purpose(purpose)
    n = _count(purpose, scale)
    if get_source(spec.source).synthetic_scenes:
        split = purpose.rsplit("-", 1)[1] if purpose.startswith("probe-") else purpose
        seed = _SCENE_SEEDS[f"probe-{split}" if purpose.startswith("probe-") else split]
        return SyntheticScenes(n, image_size=spec.image_size, seed=seed)
    root = data_root(root)
    if purpose.startswith("probe-"):
        _, task, split = purpose.split("-")
        return _probe_split(task, split, scale, root)
    return _stage_images(purpose, n, root)


def _open(purpose: str, root: Path | None, task: str, evaluation: bool) -> ImageDataset:
    """The training (``evaluation=False``) or evaluation split of ``task``'s real dataset."""
    from scopebench.data import ADE20K, ImageNet, NYUDepthV2

    if root is None:
        raise DatasetUnavailable(
            f"the bench stage {purpose!r} needs real images: pass --data-root DIR (or set SCOPEBENCH_DATA) "
            f"holding imagenet/, ade20k/ and nyud/ as described in scopebench/datasets.py")
    folder = {"seg": root / "ade20k", "depth": root / "nyud", "cls": root / "imagenet"}[task]
    if not folder.exists():
        raise DatasetUnavailable(f"bench stage {purpose!r}: no {folder.name}/ under the data root {root}; put the "
                                 "dataset there in the layout described in scopebench/datasets.py")
    # The dataset folder is there, so the user means to use it: a malformed tree is an error, not a skip.
    if task == "seg":
        return ADE20K(folder / "ADEChallengeData2016", "validation" if evaluation else "training")
    if task == "depth":
        return NYUDepthV2(folder, "test" if evaluation else "train")
    return ImageNet(folder, "val" if evaluation else "train")


def _stage_images(purpose: str, n: int, root: Path | None) -> ImageDataset:
    """SAE training images from ImageNet train; eval from ImageNet val; SCC and attention one per class."""
    data = _open(purpose, root, "cls", evaluation=purpose != "train")
    if purpose in ("scc", "attention"):
        return one_per_class(data, n, seed=0)
    return _seeded_subset(data, n)


def _probe_split(task: str, split: str, scale: BenchScale, root: Path | None) -> ImageDataset:
    purpose = f"probe-{task}-{split}"
    n = scale.removal_probes.images(task, split)
    if split == "test":
        return _seeded_subset(_open(purpose, root, task, evaluation=True), n)
    data = _open(purpose, root, task, evaluation=False)
    n_val = scale.removal_probes.images(task, "val")
    if len(data) <= n_val:
        raise ValueError(f"bench stage {purpose!r}: the {task} training split has {len(data)} images, too few "
                         f"to hold out {n_val} for validation and train the probe on the rest; use the full "
                         f"dataset, or a BenchScale with a smaller validation count in removal_probes.task_images[{task!r}]")
    order = np.random.default_rng(0).permutation(len(data))
    chosen = order[:n_val] if split == "val" else order[n_val : n_val + n]
    return subset(data, np.sort(chosen))


def _seeded_subset(data: ImageDataset, n: int) -> ImageDataset:
    """All of ``data`` when it holds at most ``n`` images, else a seeded random ``n`` of them (in index order)."""
    if len(data) <= n:
        return data
    return subset(data, np.sort(np.random.default_rng(0).permutation(len(data))[:n]))
