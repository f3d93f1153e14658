"""Per-task probe image counts of a bench scale and the datasets they produce."""
from __future__ import annotations

import pytest

from scopebench.backbones.registry import get_spec
from scopebench.benchconfig import PAPER_SCALE, PLANTED_SCALE
from scopebench.datasets import bench_dataset


@pytest.mark.parametrize("split, index", [("train", 0), ("val", 1), ("test", 2)])
def test_classification_probe_has_its_own_counts_on_the_planted_default(split: str, index: int) -> None:
    planted = get_spec("planted")
    assert len(bench_dataset(planted, f"probe-cls-{split}", PLANTED_SCALE, None)) == PLANTED_SCALE.cls_probe_images[index]
    dense = (PLANTED_SCALE.probe_train_images, PLANTED_SCALE.probe_val_images, PLANTED_SCALE.probe_test_images)
    for task in ("seg", "depth"):
        assert len(bench_dataset(planted, f"probe-{task}-{split}", PLANTED_SCALE, None)) == dense[index]


def test_without_per_task_counts_every_probe_uses_the_shared_ones() -> None:
    assert PAPER_SCALE.cls_probe_images is None
    assert [PAPER_SCALE.probe_images(task, "test") for task in ("cls", "seg", "depth")] == \
        [PAPER_SCALE.probe_test_images] * 3
