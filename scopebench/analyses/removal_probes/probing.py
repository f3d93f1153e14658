"""Feature-group removal experiments (Tables 3 and 8, Figure 8): three embeddings x three probes.

For each task the probe is trained on the original tokens, on tokens with the high-CDS
group removed and on tokens with the low-CDS group removed (DESIGN.md: the SAE error is
kept).  All three embeddings are z-scored with the original embedding's training statistics
(see :mod:`scopebench.probes.standardize` for why).  Inputs are cached token arrays and the datasets' targets; metric names follow
:data:`scopebench.claims.registry.QUANTITIES` (accuracy and mIoU in percent, RMSE in depth units).

Each removal's classification and segmentation gain (removed - original, in percent points)
comes with a paired-bootstrap interval over the test images (:mod:`scopebench.probes.bootstrap`):
the three probes score the same test images in the same order, so each resample is applied to
the per-image scores of both probes of a difference.

By default the probes read the edited tokens at the SAE layer.  With ``propagate`` (a
backbone's ``propagate(patch_tokens, prefix) -> final patch tokens``) the edited tokens
first run through the remaining blocks, next to the unedited prefix tokens; classification
then pools the propagated tokens, since the blocks are not linear and the pooled shortcut
no longer applies.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from scopebench.sae.codes import TokenArray, load_rows
from scopebench.data.base import ImageDataset, read_target
from scopebench.analyses.cds.partition import Partition
from scopebench.probes.bootstrap import Statistic, paired_interval, resampled_miou, resampled_top1
from scopebench.probes.classification import ClassificationSplit, train_classification_probe
from scopebench.probes.config import BootstrapConfig, ClassificationConfig, DepthConfig, SegmentationConfig
from scopebench.probes.depth import DepthSplit, fit_depth_standardize, train_depth_probe
from scopebench.probes.segmentation import SegmentationSplit, train_segmentation_probe
from scopebench.probes.standardize import fit_standardize
from scopebench.analyses.removal_probes.removal import (mean_tokens_and_codes, remove_group, remove_group_pooled,
                                                       remove_groups)
from scopebench.sae.base import SparseAutoencoder
from scopebench.pipeline.scc import square_resize_map
from pydantic import BaseModel

SPLITS = ("train", "val", "test")
PROPAGATE_CHUNK = 32  # images per pass through the remaining blocks

Propagate = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
EMBEDDINGS = ("original", "high_removed", "low_removed")


class ProbeScores(BaseModel):
    """A trained probe's test metric and per-test-item scores (what each removal's gain is paired with).

    The original embedding does not depend on the SAE (an empty removal returns the tokens
    exactly), so its probe is trained once per backbone and task and shared by every SAE
    (:data:`OriginalProbe`); this is the form it is kept in.
    """

    test_metric: float
    test_scores: list[Any]  # cls: correct per image; seg: confusion matrix per image; depth: RMSE per image (None: no pixel)

    @classmethod
    def of(cls, result: Any) -> ProbeScores:
        scores = result.test_scores
        values = scores.tolist() if not scores.is_floating_point() else \
            [None if v != v else v for v in scores.double().tolist()]
        return cls(test_metric=float(result.test_metric), test_scores=values)

    def scores(self) -> torch.Tensor:
        if self.test_scores and isinstance(self.test_scores[0], bool):
            return torch.tensor(self.test_scores, dtype=torch.bool)
        if self.test_scores and isinstance(self.test_scores[0], list):
            return torch.tensor(self.test_scores, dtype=torch.int32)
        return torch.tensor([float("nan") if v is None else v for v in self.test_scores], dtype=torch.float32)


#: ``original(train)``: the original embedding's probe, ``train()`` only when it is not kept already
OriginalProbe = Callable[[Callable[[], Any]], ProbeScores]


def _test_scores(embedding: str, train: Callable[[], Any], original: OriginalProbe | None
                 ) -> tuple[float, torch.Tensor]:
    """The test metric and per-item test scores of ``embedding``'s probe; the original one through ``original``."""
    if embedding == "original" and original is not None:
        kept = original(train)
        return kept.test_metric, kept.scores()
    result = train()
    return float(result.test_metric), result.test_scores


@dataclass
class ProbeInputs:
    """One split of one task: cached tokens ``[n, N, D]``, prefix ``[n, P, D]`` and the task's
    :func:`probe_targets` of its images (labels ``[n]`` or maps ``[n, S, S]``)."""

    tokens: np.ndarray
    prefix: np.ndarray
    targets: torch.Tensor


def _group(partition: Partition, embedding: str) -> np.ndarray:
    return {"original": np.zeros(0, dtype=np.int64), "high_removed": partition.high,
            "low_removed": partition.low}[embedding]


#: the dataset field each probe task predicts
TARGET_FIELDS = {"cls": "label", "seg": "segmentation", "depth": "depth"}


def probe_targets(dataset: ImageDataset, field: str, size: int) -> torch.Tensor:
    """Per-image targets centre-cropped and resized like the images (nearest, values untouched).

    ``field`` is one of :data:`TARGET_FIELDS`' values; ``size`` is the side of a dense map (unused for labels).
    Read with :func:`~scopebench.data.base.read_target`: no image is decoded where the dataset can help it.
    """
    values = []
    for i in range(len(dataset)):
        target = read_target(dataset, i, field)
        if target is None:
            what = "image-level label" if field == "label" else f"{field} map"
            raise ValueError(f"dataset {dataset.identity!r} has no {what} for item {i}")
        if field == "label":
            values.append(torch.tensor(target))
            continue
        resized = square_resize_map(target, size)
        values.append(resized.long() if field == "segmentation" else resized.float())
    return torch.stack(values)


def _gains(metric: str, gain: str, out: Mapping[str, float], test_scores: Mapping[str, torch.Tensor],
           statistic: Statistic, config: BootstrapConfig) -> dict[str, float]:
    """Each removal's gain ``{gain}_{removal}`` in points and its bootstrap interval ``..._lo``, ``..._hi``."""
    gains = {}
    for removal in EMBEDDINGS[1:]:
        lo, hi = paired_interval(test_scores["original"], test_scores[removal], statistic, config)
        gains[f"{gain}_{removal}"] = out[f"{metric}_{removal}"] - out[f"{metric}_original"]
        gains[f"{gain}_{removal}_lo"], gains[f"{gain}_{removal}_hi"] = 100.0 * lo, 100.0 * hi
    return gains


def _edited_and_propagated(tokens: TokenArray, prefix: TokenArray, sae: SparseAutoencoder, group: np.ndarray,
                           propagate: Propagate, device: torch.device) -> torch.Tensor:
    """Patch tokens with ``group`` removed at the SAE layer, then run through the remaining blocks (on CPU)."""
    out = []
    for start in range(0, len(tokens), PROPAGATE_CHUNK):
        rows = slice(start, start + PROPAGATE_CHUNK)
        edited = remove_group(load_rows(tokens, rows).to(device), sae, group)
        with torch.no_grad():
            out.append(propagate(edited, load_rows(prefix, rows).to(device)).float().cpu())
    return torch.cat(out)


def classification_metrics(sae: SparseAutoencoder, partition: Partition, inputs: Mapping[str, ProbeInputs], *,
                           config: ClassificationConfig, device: torch.device, progress: bool,
                           propagate: Propagate | None = None,
                           bootstrap: BootstrapConfig = BootstrapConfig(),
                           original: OriginalProbe | None = None) -> dict[str, float]:
    labels = {split: inputs[split].targets for split in SPLITS}
    if propagate is None:
        pooled = {}
        for split in SPLITS:
            tokens = inputs[split].tokens
            with torch.no_grad():
                parts = [mean_tokens_and_codes(load_rows(tokens, slice(i, i + 64)).to(device), sae)
                         for i in range(0, len(tokens), 64)]
            pooled[split] = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))

    def features(split: str, group: np.ndarray) -> torch.Tensor:
        if propagate is None:
            return remove_group_pooled(*pooled[split], sae.W_dec, group).cpu()
        split_inputs = inputs[split]
        return _edited_and_propagated(split_inputs.tokens, split_inputs.prefix, sae, group, propagate,
                                      device).mean(dim=1)

    n_classes = int(max(int(v.max()) for v in labels.values())) + 1
    out, correct = {}, {}
    standardizer = None
    for embedding in EMBEDDINGS:  # "original" first: its statistics standardise all three
        group = _group(partition, embedding)
        splits = [ClassificationSplit(features(s, group), labels[s]) for s in SPLITS]
        standardizer = standardizer or fit_standardize(splits[0].features)

        def train() -> Any:
            return train_classification_probe(*splits, n_classes=n_classes, config=config, device=device,
                                              progress=progress, standardizer=standardizer)
        metric, correct[embedding] = _test_scores(embedding, train, original)
        out[f"cls_top1_{embedding}"] = 100.0 * metric
    return {**out, **_gains("cls_top1", "cls_gain", out, correct, resampled_top1, bootstrap)}


def _grid_tokens(tokens: torch.Tensor) -> torch.Tensor:
    n, count, dim = tokens.shape
    side = int(round(count**0.5))
    return tokens.reshape(n, side, side, dim)


def dense_metrics(task: str, sae: SparseAutoencoder, partition: Partition, inputs: Mapping[str, ProbeInputs], *,
                  has_cls: bool, config: SegmentationConfig | DepthConfig, device: torch.device,
                  progress: bool, propagate: Propagate | None = None,
                  bootstrap: BootstrapConfig = BootstrapConfig(),
                  original: OriginalProbe | None = None) -> dict[str, float]:
    """Segmentation mIoU (``task="seg"``, with each removal's gain and its interval) or depth RMSE
    (``task="depth"``) for the three embeddings.

    The probes upsample their patch-grid logits to the size of the inputs' target maps.
    """
    targets = {s: inputs[s].targets for s in SPLITS}
    originals = {s: load_rows(inputs[s].tokens, slice(None)) for s in SPLITS}
    if task == "seg":
        valid = torch.cat([t[t != config.ignore_index] for t in targets.values()])
        n_classes = int(valid.max()) + 1
    else:
        # the CLS token is never edited; without one, the mean original patch token stands in
        global_tokens = {s: (load_rows(inputs[s].prefix, slice(None))[:, 0] if has_cls else originals[s].mean(dim=1))
                         for s in SPLITS}
    if propagate is None:  # the original tokens, and both removals of a split from one pass of the encoder
        removals = EMBEDDINGS[1:]
        groups = [_group(partition, e) for e in removals]
        at_layer = {s: {"original": originals[s], **dict(zip(removals, remove_groups(originals[s], sae, groups)))}
                    for s in SPLITS}
    out, confusions = {}, {}
    standardizer = None
    for embedding in EMBEDDINGS:  # "original" first: its statistics standardise all three
        if propagate is None:
            edited = {s: _grid_tokens(at_layer[s][embedding]) for s in SPLITS}
        else:
            edited = {s: _grid_tokens(_edited_and_propagated(originals[s], inputs[s].prefix, sae,
                                                             _group(partition, embedding), propagate, device))
                      for s in SPLITS}
        if task == "seg":
            splits = [SegmentationSplit(edited[s], targets[s]) for s in SPLITS]
            standardizer = standardizer or fit_standardize(splits[0].tokens)

            def train() -> Any:
                return train_segmentation_probe(*splits, n_classes=n_classes, config=config, device=device,
                                                progress=progress, standardizer=standardizer)
        else:
            splits = [DepthSplit(edited[s], global_tokens[s], targets[s]) for s in SPLITS]
            standardizer = standardizer or fit_depth_standardize(splits[0])

            def train() -> Any:
                return train_depth_probe(*splits, config=config, device=device, progress=progress,
                                         standardizer=standardizer)
        metric, scores = _test_scores(embedding, train, original)
        if task == "seg":
            out[f"seg_miou_{embedding}"] = 100.0 * metric
            confusions[embedding] = scores
        else:
            out[f"depth_rmse_{embedding}"] = metric
    if task == "seg":
        out.update(_gains("seg_miou", "seg_gain", out, confusions, resampled_miou, bootstrap))
    return out
