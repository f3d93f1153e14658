"""Linear probes: they learn separable toys, stay at chance on noise, and see removal.

Every probe run is tiny (a few epochs, two trials) so the file takes seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scopebench.probes.classification import ClassificationSplit, train_classification_probe
from scopebench.probes.config import ClassificationConfig, DepthConfig, SegmentationConfig
from scopebench.probes.depth import DepthSplit, DepthTask, train_depth_probe
from scopebench.probes.segmentation import SegmentationSplit, train_segmentation_probe
from scopebench.probes.metrics import miou as miou_metric
from scopebench.probes.metrics import miou_from_confusion
from scopebench.probes.metrics import rmse as rmse_metric
from scopebench.probes.trainer import sample_hyperparameters
from scopebench.probes.upsample import upsample_logits
from scopebench.analyses.removal_probes.removal import mean_tokens_and_codes, remove_group, remove_group_pooled

N_CLASSES = 3
GRID = 4  # patch grid side
PIXELS_PER_PATCH = 2  # label / depth maps are GRID * PIXELS_PER_PATCH square

# A few epochs on a hundred images, not 100 epochs on ImageNet / ADE20K: the paper's
# classification and segmentation learning rates are raised so the toys converge.
CLASSIFICATION = ClassificationConfig(epochs=8, trials=2, batch_size=16, lr_range=(0.03, 0.1))
SEGMENTATION = SegmentationConfig(epochs=8, trials=2, batch_size=16, lr_range=(0.03, 0.1), ignore_index=255)
DEPTH = DepthConfig(epochs=15, trials=2, batch_size=8, n_bins=64, min_depth=0.5, max_depth=4.5)


def gaussian_classes(n: int, dim: int, generator: torch.Generator) -> ClassificationSplit:
    """Well-separated class means + unit noise: linearly separable with high probability."""
    means = torch.eye(N_CLASSES, dim) * 8.0
    labels = torch.randint(0, N_CLASSES, (n,), generator=generator)
    return ClassificationSplit(means[labels] + torch.randn(n, dim, generator=generator), labels)


# --------------------------------------------------------------------------- planted scenes


@dataclass
class PlantedScenes:
    """Tokens = local part (atoms L: class and depth) + global part (atoms H: uninformative)."""

    tokens: torch.Tensor  # [n, GRID, GRID, d]
    image_labels: torch.Tensor  # [n]
    seg_labels: torch.Tensor  # [n, H, W]
    depth: torch.Tensor  # [n, H, W]


# atom layout: 0..2 class atoms, 3 depth atom  (group L) | 4..7 global atoms (group H)
LOCAL_ATOMS = [0, 1, 2, 3]
GLOBAL_ATOMS = [4, 5, 6, 7]
DIM = 8


def atom_basis(seed: int = 0) -> torch.Tensor:
    """Orthonormal atoms ``[8, 8]`` in a random rotation (so no atom is a coordinate axis)."""
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, generator=torch.Generator().manual_seed(seed)))
    return q.T.contiguous()


def planted_scenes(n: int, atoms: torch.Tensor, generator: torch.Generator) -> PlantedScenes:
    image_labels = torch.randint(0, N_CLASSES, (n,), generator=generator)
    other = torch.randint(0, N_CLASSES, (n, GRID, GRID), generator=generator)
    keep = torch.rand(n, GRID, GRID, generator=generator) < 0.6
    patch_labels = torch.where(keep, image_labels[:, None, None], other)
    ramp = torch.linspace(0, 1, GRID)
    slopes = torch.rand(n, 2, generator=generator)
    patch_depth = 1.0 + 2.0 * (slopes[:, 0, None, None] * ramp[:, None] + slopes[:, 1, None, None] * ramp[None, :])
    coefficients = torch.zeros(n, GRID, GRID, DIM)
    coefficients[..., :N_CLASSES] = 0.1 * torch.rand(n, GRID, GRID, N_CLASSES, generator=generator)
    coefficients[..., :N_CLASSES] += F.one_hot(patch_labels, N_CLASSES).float()
    coefficients[..., 3] = patch_depth
    coefficients[..., 4:] = 3.0 * torch.rand(n, 1, 1, 4, generator=generator)  # one global vector per image
    coefficients[..., 4:] += 0.05 * torch.rand(n, GRID, GRID, 4, generator=generator)
    size = GRID * PIXELS_PER_PATCH
    seg_labels = patch_labels.repeat_interleave(PIXELS_PER_PATCH, 1).repeat_interleave(PIXELS_PER_PATCH, 2)
    depth = F.interpolate(patch_depth[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return PlantedScenes(coefficients @ atoms, image_labels, seg_labels, depth)


class ProjectionSAE(nn.Module):
    """The planted dictionary: codes = ReLU(projection on orthonormal atoms), exact on the scenes."""

    def __init__(self, atoms: torch.Tensor) -> None:
        super().__init__()
        self.d_sae, self.d_in = atoms.shape
        self.register_buffer("W_dec", atoms)

    @property
    def config(self) -> dict[str, Any]:
        return {"kind": "projection"}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_dec.T)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return codes @ self.W_dec


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- classification


def test_classification_learns_separable_toy_and_reports_consistently() -> None:
    generator = torch.Generator().manual_seed(0)
    train, val, test = (gaussian_classes(n, 16, generator) for n in (200, 200, 100))
    result = train_classification_probe(train, val, test, config=CLASSIFICATION, progress=False)
    assert result.val_metric >= 0.97
    assert result.test_metric is not None and result.test_metric >= 0.97
    # bookkeeping: the chosen trial is the best on validation, its hyperparameters are reported
    assert len(result.trials) == 2
    best = max(result.trials, key=lambda trial: trial.val_metric)
    assert (result.val_metric, result.lr, result.weight_decay) == (best.val_metric, best.lr, best.weight_decay)
    assert result.config["epochs"] == 8 and result.metric_name == "top1" and result.higher_is_better
    # the returned probe reproduces the reported test metric when applied independently
    with torch.no_grad():
        predicted = result.probe(test.features).argmax(dim=1)
    assert result.test_metric == pytest.approx((predicted == test.labels).float().mean().item())


def test_classification_keeps_which_test_samples_it_gets_right() -> None:
    generator = torch.Generator().manual_seed(6)
    train, val, test = (gaussian_classes(n, 16, generator) for n in (120, 60, 90))
    # noisier features than the separable toy, so the test split holds both hits and misses
    train, val, test = (ClassificationSplit(s.features + 6.0 * torch.randn(s.features.shape, generator=generator),
                                            s.labels) for s in (train, val, test))
    result = train_classification_probe(train, val, test, config=CLASSIFICATION, progress=False)
    correct = result.test_scores
    assert correct is not None and correct.dtype == torch.bool and correct.shape == (90,)
    assert 0 < int(correct.sum()) < 90
    assert int(correct.sum()) / 90 == result.test_metric  # the reported top-1, exactly
    with torch.no_grad():
        logits = result.probe(test.features)  # one batch, not the evaluation's batches of 16
    top2 = logits.topk(2, dim=1).values
    # a sample may only disagree where its two best logits tie within float32 rounding of another batching
    disagree = correct != (logits.argmax(dim=1) == test.labels)
    assert bool((top2[disagree, 0] - top2[disagree, 1] <= 1e-5 * top2[disagree].abs().amax(dim=1)).all())
    assert train_classification_probe(train, val, config=CLASSIFICATION, progress=False).test_scores is None


def test_dense_probes_keep_per_image_test_scores_their_metric_is_computed_from() -> None:
    generator = torch.Generator().manual_seed(9)
    atoms = atom_basis()
    train, val, test = (planted_scenes(n, atoms, generator) for n in (48, 16, 20))
    test.seg_labels[:5, :3, :] = 255  # some unlabelled pixels in some test images
    test.depth[0] = 0.0  # a test image without depth
    segmentation = train_segmentation_probe(*(SegmentationSplit(s.tokens, s.seg_labels) for s in (train, val, test)),
                                            n_classes=N_CLASSES, config=SEGMENTATION, progress=False)
    confusions = segmentation.test_scores
    assert confusions.shape == (20, N_CLASSES, N_CLASSES)
    assert miou_from_confusion(confusions.sum(dim=0)) == segmentation.test_metric  # the reported mIoU, exactly
    # each image's matrix counts its own labelled pixels, row by ground-truth class
    for image, labels in zip(confusions, test.seg_labels):
        labelled = labels[labels != 255]
        assert image.sum(dim=1).tolist() == torch.bincount(labelled, minlength=N_CLASSES).tolist()
    depth = train_depth_probe(*(DepthSplit(s.tokens, s.tokens.mean(dim=(1, 2)), s.depth) for s in (train, val, test)),
                              config=DEPTH, progress=False)
    per_image = depth.test_scores
    assert per_image.shape == (20,) and math.isnan(per_image[0]) and not per_image[1:].isnan().any()
    # the reported RMSE is their float32 mean over images with depth: within the summation bound of 19 terms
    assert depth.test_metric == pytest.approx(per_image[1:].double().mean().item(), rel=19 * 2.0**-24)


def test_classification_on_noise_stays_at_chance() -> None:
    generator = torch.Generator().manual_seed(1)
    n_train, n_val, dim = 150, 900, 32
    train = ClassificationSplit(
        torch.randn(n_train, dim, generator=generator), torch.randint(0, N_CLASSES, (n_train,), generator=generator)
    )
    val = ClassificationSplit(
        torch.randn(n_val, dim, generator=generator), torch.randint(0, N_CLASSES, (n_val,), generator=generator)
    )
    result = train_classification_probe(train, val, config=CLASSIFICATION, progress=False)
    # binomial sd at n=900, p=1/3 is 0.016; the best of two trials is selected on val
    assert abs(result.val_metric - 1 / N_CLASSES) < 0.08


def test_same_seed_same_result_and_standardize_removes_feature_scale() -> None:
    generator = torch.Generator().manual_seed(2)
    train, val = gaussian_classes(120, 16, generator), gaussian_classes(120, 16, generator)
    scaled_train = ClassificationSplit(train.features * 1e4 + 3e4, train.labels)
    scaled_val = ClassificationSplit(val.features * 1e4 + 3e4, val.labels)
    first = train_classification_probe(scaled_train, scaled_val, config=CLASSIFICATION, progress=False)
    second = train_classification_probe(scaled_train, scaled_val, config=CLASSIFICATION, progress=False)
    unscaled = train_classification_probe(train, val, config=CLASSIFICATION, progress=False)
    assert first.trials == second.trials
    assert first.val_metric >= 0.95
    assert first.val_metric == pytest.approx(unscaled.val_metric, abs=0.02)


def test_all_trials_diverging_is_an_error() -> None:
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(32, 4, generator=generator) * 1e20  # logits overflow after one step
    huge = ClassificationSplit(features, torch.arange(32) % N_CLASSES)
    raw = CLASSIFICATION.model_copy(update={"standardize": False, "lr_range": (1.0, 1.0)})
    with pytest.raises(RuntimeError, match="all 2 top1 probe trials diverged"):
        train_classification_probe(huge, huge, config=raw, progress=False)


def test_hyperparameters_are_log_uniform_in_range() -> None:
    config = ClassificationConfig(trials=2000, seed=3)
    samples = torch.tensor(sample_hyperparameters(config))
    lr, wd = samples[:, 0], samples[:, 1]
    assert bool(((lr >= 1e-3) & (lr <= 1e-2)).all()) and bool(((wd >= 1e-5) & (wd <= 1e-4)).all())
    # log-uniform: half the mass below the geometric mean (uniform would put 24% there)
    assert abs((lr < 10**-2.5).float().mean().item() - 0.5) < 0.05
    assert sample_hyperparameters(config) == sample_hyperparameters(config)


def test_paper_defaults_and_config_validation() -> None:
    paper = [(ClassificationConfig(), 1024, (1e-3, 1e-2)), (SegmentationConfig(), 64, (1e-3, 1e-2)), (DepthConfig(), 8, (0.1, 1.0))]
    for config, batch_size, lr_range in paper:
        assert (config.epochs, config.trials, config.momentum) == (100, 5, 0.9)
        assert (config.batch_size, config.lr_range, config.weight_decay_range) == (batch_size, lr_range, (1e-5, 1e-4))
    assert DepthConfig().n_bins == 256
    with pytest.raises(ValueError, match="0 < low <= high"):
        ClassificationConfig(lr_range=(1e-2, 1e-3))
    with pytest.raises(ValueError, match="max_depth"):
        DepthConfig(min_depth=2.0, max_depth=1.0)


def test_bad_splits_are_rejected() -> None:
    with pytest.raises(ValueError, match="one per feature row"):
        ClassificationSplit(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    good = ClassificationSplit(torch.zeros(4, 3), torch.tensor([0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        train_classification_probe(good, good, n_classes=2, config=CLASSIFICATION, progress=False)
    with pytest.raises(ValueError, match="patch grid"):
        SegmentationSplit(torch.zeros(2, 16, 3), torch.zeros(2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="mean patch token"):
        DepthSplit(torch.zeros(2, 4, 4, 3), torch.zeros(2, 4), torch.ones(2, 8, 8))
    seg = SegmentationSplit(torch.zeros(1, 2, 2, 3), torch.tensor([[[0, 1], [-1, 255]]]))
    with pytest.raises(ValueError, match="remap"):
        train_segmentation_probe(seg, seg, n_classes=2, config=SEGMENTATION, progress=False)


# --------------------------------------------------------------------------- depth head


def test_depth_logits_on_grid_equal_linear_on_upsampled_features() -> None:
    generator = torch.Generator().manual_seed(4)
    tokens, global_tokens = torch.randn(3, 3, 5, 6, generator=generator), torch.randn(3, 6, generator=generator)
    split = DepthSplit(tokens, global_tokens, torch.rand(3, 7, 11, generator=generator) + 0.5)
    probe = DepthTask(split, DEPTH).build(generator)
    # the paper's order: the global token placed before every patch token, upsampled to the depth size, then linear
    concatenated = torch.cat([global_tokens[:, None, None, :].expand(3, 3, 5, 6), tokens], dim=-1)
    features = probe.standardize(concatenated).permute(0, 3, 1, 2)
    upsampled = F.interpolate(features, size=(7, 11), mode="bilinear", align_corners=False)
    expected = probe.linear(upsampled.permute(0, 2, 3, 1))
    with torch.no_grad():
        torch.testing.assert_close(probe.logits(tokens, global_tokens, (7, 11)), expected)
        depth = probe(tokens, global_tokens, (7, 11))
    centres = probe.centres
    # depth is the softmax-weighted mean of the bin centres, at every pixel
    torch.testing.assert_close(depth, (expected.softmax(dim=-1) * centres).sum(dim=-1))
    assert centres[0] == pytest.approx(0.5 + 4.0 / 128) and centres[-1] == pytest.approx(4.5 - 4.0 / 128)
    assert depth.shape == (3, 7, 11) and bool(((depth > 0.5) & (depth < 4.5)).all())


def test_logits_at_the_target_size_are_not_resampled_and_lose_nothing() -> None:
    generator = torch.Generator().manual_seed(6)
    # channels-last, as both dense probes lay out their logits
    grid = torch.randn(2, 5, 4, 9, generator=generator).permute(0, 3, 1, 2).requires_grad_()
    upstream = torch.randn(2, 9, 5, 4, generator=generator)
    resized = F.interpolate(grid, size=(5, 4), mode="bilinear", align_corners=False)
    assert upsample_logits(grid, (5, 4)) is grid and torch.equal(resized, grid)  # scale 1: weights 1 and 0
    kept, = torch.autograd.grad((upsample_logits(grid, (5, 4)) * upstream).sum(), grid)
    through, = torch.autograd.grad((resized * upstream).sum(), grid)
    assert torch.equal(kept, through)
    torch.testing.assert_close(upsample_logits(grid, (7, 11)),
                               F.interpolate(grid, size=(7, 11), mode="bilinear", align_corners=False))


def test_dense_probes_skip_ignored_pixels_and_report_recomputable_metrics() -> None:
    generator = torch.Generator().manual_seed(8)
    atoms = atom_basis()
    train, val = planted_scenes(64, atoms, generator), planted_scenes(32, atoms, generator)
    # a quarter of each map is unlabelled (label 255 would crash cross-entropy if not skipped)
    for scenes in (train, val):
        scenes.seg_labels[:, :4, :4] = 255
        scenes.depth[:, :4, :4] = 0.0
    segmentation = train_segmentation_probe(
        SegmentationSplit(train.tokens, train.seg_labels),
        SegmentationSplit(val.tokens, val.seg_labels),
        n_classes=N_CLASSES,
        config=SEGMENTATION,
        progress=False,
    )
    with torch.no_grad():
        predicted = segmentation.probe(val.tokens, (8, 8)).argmax(dim=1)
    assert segmentation.val_metric == pytest.approx(miou_metric(predicted, val.seg_labels, N_CLASSES, 255))
    assert segmentation.val_metric >= 0.8
    depth = train_depth_probe(
        DepthSplit(train.tokens, train.tokens.mean(dim=(1, 2)), train.depth),
        DepthSplit(val.tokens, val.tokens.mean(dim=(1, 2)), val.depth),
        config=DEPTH,
        progress=False,
    )
    with torch.no_grad():
        predicted_depth = depth.probe(val.tokens, val.tokens.mean(dim=(1, 2)), (8, 8))
    assert depth.val_metric == pytest.approx(rmse_metric(predicted_depth, val.depth), rel=1e-5)
    assert depth.val_metric <= 0.6 * val.depth[val.depth > 0].std().item()
    assert not depth.higher_is_better and min(t.val_metric for t in depth.trials) == depth.val_metric


# --------------------------------------------------------------------------- planted truth


@dataclass
class Scores:
    top1: float
    miou: float
    rmse: float


def probe_all(train: PlantedScenes, val: PlantedScenes, sae: ProjectionSAE, group: list[int]) -> Scores:
    """Remove ``group`` from the tokens, then run the three probes (pooled path for classification)."""

    def pooled(scenes: PlantedScenes) -> torch.Tensor:
        mean_x, mean_codes = mean_tokens_and_codes(scenes.tokens.flatten(1, 2), sae)
        return remove_group_pooled(mean_x, mean_codes, sae.W_dec, group)

    removed_train, removed_val = remove_group(train.tokens, sae, group), remove_group(val.tokens, sae, group)
    top1 = train_classification_probe(
        ClassificationSplit(pooled(train), train.image_labels),
        ClassificationSplit(pooled(val), val.image_labels),
        config=CLASSIFICATION,
        progress=False,
    ).val_metric
    miou = train_segmentation_probe(
        SegmentationSplit(removed_train, train.seg_labels),
        SegmentationSplit(removed_val, val.seg_labels),
        n_classes=N_CLASSES,
        config=SEGMENTATION,
        progress=False,
    ).val_metric
    rmse = train_depth_probe(  # no CLS token in the planted scenes: the mean patch token stands in
        DepthSplit(removed_train, removed_train.mean(dim=(1, 2)), train.depth),
        DepthSplit(removed_val, removed_val.mean(dim=(1, 2)), val.depth),
        config=DEPTH,
        progress=False,
    ).val_metric
    return Scores(top1, miou, rmse)


@pytest.fixture(scope="module")
def planted_results() -> tuple[dict[str, Scores], float]:
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(5)
    atoms = atom_basis()
    train, val = planted_scenes(128, atoms, generator), planted_scenes(64, atoms, generator)
    sae = ProjectionSAE(atoms)
    groups = {"original": [], "global removed": GLOBAL_ATOMS, "local removed": LOCAL_ATOMS}
    return {name: probe_all(train, val, sae, group) for name, group in groups.items()}, val.depth.std().item()


def test_planted_sae_encodes_scenes_exactly() -> None:
    atoms = atom_basis()
    scenes = planted_scenes(4, atoms, torch.Generator().manual_seed(6))
    sae = ProjectionSAE(atoms)
    flat = scenes.tokens.reshape(-1, DIM)
    torch.testing.assert_close(sae.decode(sae.encode(flat)), flat)
    # local removal leaves exactly the global part, which carries no patch information
    local_removed = remove_group(scenes.tokens, sae, LOCAL_ATOMS)
    torch.testing.assert_close(local_removed @ atoms[LOCAL_ATOMS].T, torch.zeros(4, GRID, GRID, 4), atol=1e-5, rtol=0)


def test_probes_learn_the_planted_local_information(planted_results: tuple[dict[str, Scores], float]) -> None:
    scores, depth_std = planted_results
    original = scores["original"]
    assert original.top1 >= 0.9
    assert original.miou >= 0.95
    assert original.rmse <= 0.3 * depth_std


def test_removing_local_group_destroys_probes(planted_results: tuple[dict[str, Scores], float]) -> None:
    scores, depth_std = planted_results
    removed = scores["local removed"]
    assert removed.top1 <= 0.55  # chance is 1/3
    assert removed.miou <= 0.4  # chance level for 3 classes is 0.11-0.2
    assert removed.rmse >= 0.8 * depth_std  # no better than predicting the mean depth


def test_removing_global_group_barely_changes_probes(planted_results: tuple[dict[str, Scores], float]) -> None:
    scores, _ = planted_results
    original, removed = scores["original"], scores["global removed"]
    assert removed.top1 >= original.top1 - 0.05
    assert removed.miou >= original.miou - 0.05
    assert removed.rmse <= original.rmse * 1.25 + 0.02
