"""Per-task probe image counts of a bench scale and the datasets they produce."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

import scopebench.data as data_module
from scopebench.backbones.registry import get_spec
from scopebench.suite.scales import PAPER_SCALE, PLANTED_SCALE
from scopebench.data.subsets import Subset
from scopebench.suite.stages import bench_dataset


@pytest.mark.parametrize("split, index", [("train", 0), ("val", 1), ("test", 2)])
def test_classification_probe_has_its_own_counts_on_the_planted_default(split: str, index: int) -> None:
    planted = get_spec("planted")
    probes = PLANTED_SCALE.removal_probes
    cls_counts = probes.task_images["cls"]
    assert len(bench_dataset(planted, f"probe-cls-{split}", PLANTED_SCALE, None)) == cls_counts[index]
    dense = (probes.train_images, probes.val_images, probes.test_images)
    for task in ("seg", "depth"):
        assert len(bench_dataset(planted, f"probe-{task}-{split}", PLANTED_SCALE, None)) == dense[index]


def test_task_counts_name_known_tasks_and_positive_counts() -> None:
    with pytest.raises(ValidationError, match="unknown task"):
        PLANTED_SCALE.updated({"removal_probes": {"task_images": {"segm": (1, 1, 1)}}})
    with pytest.raises(ValidationError, match="must be > 0"):
        PLANTED_SCALE.updated({"removal_probes": {"task_images": {"seg": (10, 0, 5)}}})


def test_each_analysis_config_is_a_field_of_the_scale_and_updates_nest() -> None:
    from scopebench.analyses import ANALYSES

    for name, analysis in ANALYSES.items():
        assert isinstance(PLANTED_SCALE.analysis(name), analysis.config), name
    smaller = PLANTED_SCALE.updated({"cds": {"images": 7}, "train_images": 5})
    assert (smaller.cds.images, smaller.cds.k, smaller.train_images) == (7, PLANTED_SCALE.cds.k, 5)
    with pytest.raises(ValidationError, match="imgs"):
        PLANTED_SCALE.updated({"cds": {"imgs": 7}})


class _OfficialSplit:
    """Stands in for a real dataset split: only its size and identity matter to the split logic."""

    SIZES = {("imagenet", "train"): 1_281_167, ("imagenet", "val"): 50_000,
             ("ade20k", "training"): 20_210, ("ade20k", "validation"): 2_000,
             ("nyud", "train"): 795, ("nyud", "test"): 654}

    def __init__(self, root: Path, split: str) -> None:
        self.name = "ade20k" if root.name == "ADEChallengeData2016" else root.name
        self.split = split
        self.identity = f"{self.name}:{split}"

    def __len__(self) -> int:
        return self.SIZES[(self.name, self.split)]


@pytest.fixture
def official_splits(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A data root whose three dataset folders exist, read by loaders that report the official split sizes."""
    for loader in ("ImageNet", "ADE20K", "NYUDepthV2"):
        monkeypatch.setattr(data_module, loader, _OfficialSplit)
    for folder in ("imagenet", "ade20k", "nyud"):
        (tmp_path / folder).mkdir()
    return tmp_path


def _indices(dataset) -> set[int]:
    return set(dataset.indices) if isinstance(dataset, Subset) else set(range(len(dataset)))


@pytest.mark.parametrize("backbone", ["clip-b16", "dinov2-b"])
def test_paper_scale_probe_splits_are_disjoint_and_use_the_small_evaluation_splits_whole(
        official_splits, backbone: str) -> None:
    spec = get_spec(backbone)
    root = official_splits
    expected_test = {"cls": ("imagenet:val", 50_000), "seg": ("ade20k:validation", 2_000),
                     "depth": ("nyud:test", 654)}
    expected_train_split = {"cls": ("imagenet:train", 50_000), "seg": ("ade20k:training", 20_210 - 1_000),
                            "depth": ("nyud:train", 795 - 80)}
    for task in ("cls", "seg", "depth"):
        train, val, test = (bench_dataset(spec, f"probe-{task}-{split}", PAPER_SCALE, root)
                            for split in ("train", "val", "test"))
        parent, n_test = expected_test[task]
        assert test.identity.split("|")[0] == parent and len(test) == n_test
        parent, n_train = expected_train_split[task]
        assert train.identity.split("|")[0] == val.identity.split("|")[0] == parent
        assert len(val) == PAPER_SCALE.removal_probes.images(task, "val") and len(train) == n_train
        assert not _indices(train) & _indices(val)  # validation is held out of the probe's training images


def test_a_training_split_too_small_for_the_validation_part_is_an_error_naming_the_fix(
        official_splits, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_OfficialSplit.SIZES, ("nyud", "train"), 60)
    with pytest.raises(ValueError, match=r"has 60 images, too few to hold out 80 .*task_images\['depth'\]"):
        bench_dataset(get_spec("dinov2-b"), "probe-depth-train", PAPER_SCALE, official_splits)


@pytest.mark.parametrize("scale_name", ["PLANTED_SCALE", "PAPER_SCALE"])
@pytest.mark.parametrize("recipe_name", ["batchtopk", "topk", "relu", "jumprelu", "matryoshka"])
def test_every_baseline_trains_well_past_its_warmup_at_both_scales(scale_name: str, recipe_name: str) -> None:
    """Counted by hand from the scale: at paper scale the SAEs once had 97 steps for a 100-step warmup."""
    from scopebench.suite import scales as benchconfig
    from scopebench.sae.recipe import load_recipe

    scale = getattr(benchconfig, scale_name)
    recipe = load_recipe(recipe_name).model_copy(update=scale.sae_overrides)
    stored_per_image = scale.train_patches_per_image or 10**9
    tokens = recipe.n_tokens or recipe.epochs * scale.train_images * min(recipe.tokens_per_image, stored_per_image)
    steps = tokens // recipe.batch_size
    assert steps >= 4 * recipe.lr_warmup_steps, (steps, recipe.lr_warmup_steps)


def test_missing_dataset_is_unavailable_but_a_malformed_one_is_an_error(tmp_path: Path) -> None:
    """A skip for data that is not there; a tree the user put there but got wrong must not turn the run green."""
    from scopebench.data.files import DatasetLayoutError
    from scopebench.suite.stages import DatasetUnavailable

    spec = get_spec("dinov2-b")
    with pytest.raises(DatasetUnavailable, match="no imagenet/ under the data root"):
        bench_dataset(spec, "eval", PAPER_SCALE, tmp_path)
    (tmp_path / "imagenet" / "val").mkdir(parents=True)  # no train/, no class folders
    with pytest.raises(DatasetLayoutError) as err:
        bench_dataset(spec, "eval", PAPER_SCALE, tmp_path)
    assert not isinstance(err.value, DatasetUnavailable) and "expected layout" in str(err.value)


def test_a_scale_file_changes_one_backbone_and_bad_ones_are_refused_naming_the_problem(tmp_path) -> None:
    import json

    from scopebench.suite.scales import PLANTED_SCALE, ScaleFileError, read_scale_file

    good = tmp_path / "scale.json"
    good.write_text(json.dumps({"planted": {"cds": {"images": 32}, "batch_size": 8}}))
    scales = read_scale_file(good)
    assert set(scales) == {"planted"} and scales["planted"].cds.images == 32 and scales["planted"].batch_size == 8
    assert scales["planted"].cds.k == PLANTED_SCALE.cds.k  # what the file does not name stays built in
    for content, message in ((["planted"], "expected a JSON object"), ({"vit-x": {}}, "unknown backbone 'vit-x'"),
                             ({"planted": {"cds": {"images": 0}}}, "cds.images: Input should be greater than 0"),
                             ({"planted": {"cds": {"imgs": 3}}}, "cds.imgs: Extra inputs are not permitted"),
                             ({"planted": 3}, "expected an object of scale fields")):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(content))
        with pytest.raises(ScaleFileError, match=re.escape(message)):
            read_scale_file(bad)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ScaleFileError, match="cannot read a JSON object"):
        read_scale_file(tmp_path / "broken.json")


def test_every_planted_size_runs_at_the_planted_scale_and_real_backbones_at_the_papers() -> None:
    from scopebench.suite.scales import scale_for, scale_name_for

    assert [scale_name_for(n) for n in ("planted", "planted-b", "planted-l")] == ["planted"] * 3
    assert scale_for("planted-l") is PLANTED_SCALE
    assert scale_name_for("dinov2-b") == "paper" and scale_name_for("my-own-vit") == "paper"
