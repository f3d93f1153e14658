"""Which images each bench stage uses, per backbone (the planted scenes or the real datasets).

Stages ("purposes"): ``train`` (SAE training), ``eval`` (reconstruction, tau, awCDS),
``scc`` (CDS), ``attention`` (attention EMD), and ``probe-<task>-<split>`` with task in
cls / seg / depth and split in train / val / test.  Real datasets live under one data
root (``--data-root`` or ``$SCOPEBENCH_DATA``)::

    <root>/imagenet/{train,val}/<wnid>/*.JPEG
    <root>/ade20k/ADEChallengeData2016/{images,annotations}/{training,validation}/
    <root>/nyud/{train,test}/{rgb,depth}/<name>.png
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from scopebench.backbones.spec import BackboneSpec
from scopebench.benchconfig import BenchScale
from scopebench.data.base import ImageDataset
from scopebench.data.scenes import SyntheticScenes

# Distinct seeds keep the planted stages on disjoint scenes.
_SCENE_SEEDS = {"train": 1, "eval": 2, "scc": 3, "attention": 4, "probe-train": 5, "probe-val": 6, "probe-test": 7}


class DatasetUnavailable(FileNotFoundError):
    """A real dataset is not on this machine; the message says where it is expected."""


def _count(purpose: str, scale: BenchScale) -> int:
    if purpose.startswith("probe-"):
        _, task, split = purpose.split("-")
        return scale.probe_images(task, split)
    return {"train": scale.train_images, "eval": scale.eval_images, "scc": scale.scc_images,
            "attention": scale.attention_images}[purpose]


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
    if spec.source == "planted":
        split = purpose.rsplit("-", 1)[1] if purpose.startswith("probe-") else purpose
        seed = _SCENE_SEEDS[f"probe-{split}" if purpose.startswith("probe-") else split]
        return SyntheticScenes(n, image_size=spec.image_size, seed=seed)
    # probe val and test come from the same official split, disjoint: test starts after val
    offset = scale.probe_images(purpose.split("-")[1], "val") if purpose.startswith("probe-") and \
        purpose.endswith("-test") else 0
    return _real_dataset(purpose, n, offset, data_root(root))


def _real_dataset(purpose: str, n: int, offset: int, root: Path | None) -> ImageDataset:
    from scopebench.data import ADE20K, ImageNet, NYUDepthV2
    from scopebench.data.sampling import one_per_class, subset

    if root is None:
        raise DatasetUnavailable(
            f"the bench stage {purpose!r} needs real images: pass --data-root DIR (or set SCOPEBENCH_DATA) "
            f"holding imagenet/, ade20k/ and nyud/ as described in scopebench/datasets.py")
    task = purpose.split("-")[1] if purpose.startswith("probe-") else "cls"
    split = purpose.rsplit("-", 1)[1] if purpose.startswith("probe-") else None
    try:
        if task == "seg":
            data = ADE20K(root / "ade20k" / "ADEChallengeData2016", "training" if split == "train" else "validation")
        elif task == "depth":
            data = NYUDepthV2(root / "nyud", "train" if split == "train" else "test")
        elif purpose in ("scc", "attention"):
            return one_per_class(ImageNet(root / "imagenet", "val"), n, seed=0)
        else:
            data = ImageNet(root / "imagenet", "train" if purpose in ("train", "probe-cls-train") else "val")
    except FileNotFoundError as err:
        raise DatasetUnavailable(f"bench stage {purpose!r}: {err}") from None
    if offset == 0 and len(data) <= n:
        return data
    chosen = np.random.default_rng(0).permutation(len(data))[offset : offset + n]
    if len(chosen) == 0:
        raise DatasetUnavailable(f"bench stage {purpose!r}: the split has {len(data)} images, fewer than the "
                                 f"{offset} already used for validation")
    return subset(data, np.sort(chosen))
