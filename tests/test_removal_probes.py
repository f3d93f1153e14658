"""The removal-probe glue: which features each probe sees, with and without propagation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scopebench.pipeline.cache import ActivationStore
from scopebench.data.base import Sample
from scopebench.analyses.cds.partition import Partition
from scopebench.probes.config import ClassificationConfig, SegmentationConfig
from scopebench.analyses.removal_probes.output import RemovalProbesOutput
from scopebench.analyses.removal_probes.removal import remove_group
from scopebench.analyses.removal_probes.probing import (PROPAGATE_CHUNK, ProbeInputs, ProbeScores,
                                                       _edited_and_propagated, classification_metrics,
                                                       dense_metrics, probe_targets)
from scopebench.suite.workbench import Unavailable, Workbench
from tiny_sae import ReluSAE

D, SIDE, N_CLASSES = 6, 2, 3


class LabelledImages:
    """Images whose class label is all the probes need; segmentation maps carry the label everywhere."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    @property
    def identity(self) -> str:
        return f"labelled-{len(self.labels)}"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Sample:
        label = self.labels[index]
        return Sample(image=torch.zeros(3, 8, 8), label=label, segmentation=torch.full((8, 8), label))


def make_inputs(n: int, seed: int, field: str = "label") -> tuple[ProbeInputs, list[int]]:
    """Noise patch tokens that say nothing about the label; the prefix token says it (one-hot, scaled).

    The targets are ``field``'s: the labels, or 4 x 4 segmentation maps.
    """
    rng = np.random.default_rng(seed)
    labels = [int(v) for v in rng.integers(0, N_CLASSES, n)]
    tokens = rng.normal(size=(n, SIDE * SIDE, D)).astype(np.float32)
    prefix = np.zeros((n, 1, D), dtype=np.float32)
    prefix[np.arange(n), 0, labels] = 5.0
    targets = probe_targets(LabelledImages(labels), field, 4)
    return ProbeInputs(tokens=tokens, prefix=prefix, targets=targets), labels


SPLIT_SIZES = (("train", 96, 0), ("val", 48, 1), ("test", 48, 2))


@pytest.fixture(scope="module")
def splits() -> dict[str, ProbeInputs]:
    return {split: make_inputs(n, seed)[0] for split, n, seed in SPLIT_SIZES}


@pytest.fixture(scope="module")
def seg_splits() -> dict[str, ProbeInputs]:
    return {split: make_inputs(n, seed, "segmentation")[0] for split, n, seed in SPLIT_SIZES}


@pytest.fixture(scope="module")
def sae() -> ReluSAE:
    return ReluSAE(torch.eye(D))


@pytest.fixture(scope="module")
def groups() -> Partition:
    return Partition(low=np.array([0, 1, 2]), high=np.array([3, 4, 5]), gamma=0.5, n_dead=0)


def prefix_everywhere(tokens: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
    """A stand-in for the remaining blocks that is not linear in the patch tokens: attend only to the prefix."""
    return prefix[:, :1].expand_as(tokens) + 0.0 * tokens


PROBE_RUN = dict(device=torch.device("cpu"), progress=False)


@pytest.fixture(scope="module")
def cls_scores(sae, splits, groups) -> dict[str, dict[str, float]]:
    """Classification scores at the SAE layer and through :func:`prefix_everywhere` (shared: each takes seconds)."""
    config = ClassificationConfig(epochs=30, trials=1, batch_size=32, lr_range=(0.05, 0.05))
    return {"at_layer": classification_metrics(sae, groups, splits, config=config, **PROBE_RUN),
            "propagated": classification_metrics(sae, groups, splits, config=config, propagate=prefix_everywhere,
                                                 **PROBE_RUN)}


@pytest.fixture(scope="module")
def seg_scores(sae, seg_splits, groups) -> dict[str, dict[str, float]]:
    config = SegmentationConfig(epochs=30, trials=1, batch_size=32, lr_range=(0.05, 0.05), ignore_index=-1)
    kwargs = dict(has_cls=True, config=config, **PROBE_RUN)
    return {"at_layer": dense_metrics("seg", sae, groups, seg_splits, **kwargs),
            "propagated": dense_metrics("seg", sae, groups, seg_splits, propagate=prefix_everywhere, **kwargs)}


def test_edited_tokens_go_through_propagation_in_chunks_beside_the_unedited_prefix(sae, splits, groups) -> None:
    calls = []

    def recording(tokens: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        calls.append((tokens.clone(), prefix.clone()))
        return 2.0 * tokens

    inputs = make_inputs(PROPAGATE_CHUNK + 5, seed=3)[0]
    out = _edited_and_propagated(inputs.tokens, inputs.prefix, sae, groups.low, recording, torch.device("cpu"))
    expected = remove_group(torch.from_numpy(inputs.tokens), sae, groups.low)
    assert [len(t) for t, _ in calls] == [PROPAGATE_CHUNK, 5]
    torch.testing.assert_close(torch.cat([t for t, _ in calls]), expected)
    torch.testing.assert_close(torch.cat([p for _, p in calls]), torch.from_numpy(inputs.prefix))
    torch.testing.assert_close(out, 2.0 * expected)


def test_classification_pools_the_propagated_tokens(cls_scores) -> None:
    at_layer, propagated = cls_scores["at_layer"], cls_scores["propagated"]
    # only the propagated features carry the label (through the prefix token)
    assert all(propagated[f"cls_top1_{e}"] == 100.0 for e in ("original", "high_removed", "low_removed"))
    assert at_layer["cls_top1_original"] < 70.0


def test_segmentation_reads_the_propagated_tokens(seg_scores) -> None:
    at_layer, propagated = seg_scores["at_layer"], seg_scores["propagated"]
    assert propagated["seg_miou_original"] == pytest.approx(100.0)
    assert at_layer["seg_miou_original"] < 70.0


def test_output_carries_each_removals_gain_and_its_bootstrap_interval(cls_scores, seg_scores) -> None:
    cls_only = RemovalProbesOutput(**cls_scores["at_layer"])
    both = RemovalProbesOutput(**cls_scores["at_layer"], **seg_scores["at_layer"]).quantities()
    for task, score in (("cls", "cls_top1"), ("seg", "seg_miou")):
        for removal in ("high_removed", "low_removed"):
            gain, lo, hi = (both[f"{task}_gain_{removal}{end}"] for end in ("", "_lo", "_hi"))
            assert gain == both[f"{score}_{removal}"] - both[f"{score}_original"]
            assert lo < hi
    # on noise patch tokens every classification probe is at chance: the true gains are 0, and both
    # 95% intervals hold it (they span about 20 points on 48 test images)
    assert all(both[f"cls_gain_{r}_lo"] < 0.0 < both[f"cls_gain_{r}_hi"] for r in ("high_removed", "low_removed"))
    assert cls_only.seg_gain_high_removed is None and cls_only.seg_gain_low_removed_hi is None
    # through propagation all three probes classify every test image correctly: nothing to resample
    perfect = cls_scores["propagated"]
    assert [perfect[f"cls_gain_{r}{end}"] for r in ("high_removed", "low_removed") for end in ("", "_lo", "_hi")] \
        == [0.0] * 6


def test_workbench_skips_propagation_for_a_backbone_without_later_blocks(tmp_path) -> None:
    from scopebench.analyses.removal_probes.compute import _propagation

    workbench = Workbench(ActivationStore(tmp_path), device="cpu", progress=False, propagate=True)
    config = workbench.config("removal_probes", "planted")
    assert config.propagate  # the session option is part of the config recorded beside the numbers
    with pytest.raises(Unavailable, match="no blocks after its SAE layer"):
        _propagation(workbench, "planted", config)
    plain = Workbench(ActivationStore(tmp_path), device="cpu", progress=False)
    assert _propagation(plain, "planted", plain.config("removal_probes", "planted")) is None


def test_dense_targets_keep_labels_and_depths_beyond_pixel_range() -> None:
    class Scene:
        identity = "one-scene"

        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int) -> Sample:
            depth = torch.linspace(0.5, 9.5, 64).reshape(8, 8)
            labels = torch.arange(64).reshape(8, 8) % 5 - 1  # -1 = ignore, classes up to 3
            return Sample(image=torch.zeros(3, 8, 8), depth=depth, segmentation=labels)

    depth = probe_targets(Scene(), "depth", 4)[0]
    labels = probe_targets(Scene(), "segmentation", 4)[0]
    # halving keeps the pixel under each output cell's centre: rows and columns 1, 3, 5, 7
    torch.testing.assert_close(depth, torch.linspace(0.5, 9.5, 64).reshape(8, 8)[1::2, 1::2])
    assert labels.tolist() == (torch.arange(64).reshape(8, 8) % 5 - 1)[1::2, 1::2].tolist()


@pytest.mark.parametrize("task", ["cls", "seg"])
def test_the_original_probe_is_trained_once_and_a_kept_one_gives_the_same_scores(sae, splits, seg_splits, groups,
                                                                                  cls_scores, seg_scores, task) -> None:
    """The original embedding does not depend on the SAE: a second SAE pairs its removals with the kept probe
    (through its JSON form, as the activation store keeps it) and gets every score of a fresh run."""
    kept: list[ProbeScores] = []

    def keep(train):
        if not kept:
            kept.append(ProbeScores.model_validate_json(ProbeScores.of(train()).model_dump_json()))
        return kept[0]
    if task == "cls":
        config = ClassificationConfig(epochs=30, trials=1, batch_size=32, lr_range=(0.05, 0.05))
        run = lambda: classification_metrics(sae, groups, splits, config=config, original=keep, **PROBE_RUN)  # noqa: E731
        fresh = cls_scores["at_layer"]
    else:
        config = SegmentationConfig(epochs=30, trials=1, batch_size=32, lr_range=(0.05, 0.05), ignore_index=-1)
        run = lambda: dense_metrics("seg", sae, groups, seg_splits, has_cls=True, config=config,  # noqa: E731
                                    original=keep, **PROBE_RUN)
        fresh = seg_scores["at_layer"]
    assert run() == fresh and run() == fresh  # trained on the first call, read back on the second
    assert len(kept) == 1


def test_probe_scores_keep_every_kind_of_per_item_score_exactly() -> None:
    class Result:
        def __init__(self, scores):
            self.test_metric, self.test_scores = 0.25, scores
    for scores in (torch.tensor([True, False, True]), torch.arange(2 * 3 * 3, dtype=torch.int32).reshape(2, 3, 3),
                   torch.tensor([0.5, float("nan"), 1.0 / 3.0], dtype=torch.float32)):
        back = ProbeScores.model_validate_json(ProbeScores.of(Result(scores)).model_dump_json()).scores()
        assert back.dtype == scores.dtype
        assert torch.equal(back, scores) if not scores.is_floating_point() else \
            torch.equal(back.isnan(), scores.isnan()) and torch.equal(back[~back.isnan()], scores[~scores.isnan()])
