"""The whole pipeline against the planted backbone's ground truth (issues "scope analysis", "removal probes").

One module-scoped :class:`~scopebench.suite.workbench.Workbench` runs every stage once, at a
scale smaller than the embedded default: token extraction, the paper's BatchTopK SAE, CDS,
the partition, awCDS, attention EMD and the segmentation removal probe.  Each test then
compares one analysis with what the planted backbone put into its tokens: which positions
carry the global part (``truth(pixels).outlier_mask``).

A feature's planted scope is read from its decoder row: global when nearly all of it lies in
the planted global subspace (the outliers' and the context's atoms), local when nearly none
does.  Since planted v8 the SAE learns the planted atoms, so its decoder rows say what they
encode (on v7, whose 64 dimensions a random dictionary already spans, they did not).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from scopebench.backbones.planted import SCOPE_CUTS, PlantedBackbone
from scopebench.suite.scales import PLANTED_SCALE
from scopebench.pipeline.cache import ActivationStore
from scopebench.probes.config import DepthConfig, SegmentationConfig
from scopebench.pipeline.loader import ResizedView, batch_plan, load_views
from scopebench.suite.workbench import Workbench

BACKBONE = "planted"
SAE = "batchtopk"

# Small enough for a unit-test budget, large enough that the planted structure is learned. The SAE trains
# as the bench's does (1,200 images): on v9, from 600 images (4 of 256 context atoms each, so ~9 views per
# atom) the CDS histogram had no significant valley; with 300k training tokens from 400 images (v7) the
# TopK SAE's CDS-vs-truth AUROC fell to 0.77. The dense probes use one trial at a fixed learning rate: a
# single random-search draw of the learning rate made mIoU swing by tens of points between seeds.
PIPELINE_SCALE = PLANTED_SCALE.updated({
    "reconstruction": {"images": 128}, "cds": {"images": 96}, "attention_emd": {"images": 8},
    "removal_probes": {
        "train_images": 160, "val_images": 48, "test_images": 96, "dense_target_size": 28,
        "segmentation": SegmentationConfig(epochs=6, trials=1, batch_size=32, lr_range=(1e-2, 1e-2),
                                           ignore_index=-1).model_dump(),
        "depth": DepthConfig(epochs=20, trials=1, batch_size=32, lr_range=(0.3, 0.3), min_depth=0.5,
                             max_depth=12.0).model_dump()},
})


@pytest.fixture(scope="module")
def planted_workbench(tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    store = ActivationStore(tmp_path_factory.mktemp("planted-pipeline-cache"))
    return Workbench(store, device="cpu", progress=False, scales={BACKBONE: PIPELINE_SCALE})


@pytest.fixture(scope="module")
def planted(planted_workbench: Workbench) -> PlantedBackbone:
    backbone = planted_workbench.backbone(BACKBONE)
    assert isinstance(backbone, PlantedBackbone)
    return backbone


def planted_outlier_mask(workbench: Workbench, planted: PlantedBackbone, purpose: str) -> np.ndarray:
    """``[images, patches]`` bool: where the planted backbone put the global part, for one token set."""
    rows = np.asarray(workbench.tokens(BACKBONE, purpose).image_index)
    resize = ResizedView(planted.preprocess.image_size, planted.preprocess.interpolation)
    views = load_views(workbench.dataset(BACKBONE, purpose), rows, resize, batch_plan(len(rows), len(rows)),
                       workers=0, target=torch.device("cpu"))
    return planted.truth(next(views)[""]).outlier_mask.numpy()


@pytest.fixture(scope="module")
def global_share(planted_workbench: Workbench, planted: PlantedBackbone) -> np.ndarray:
    """Per SAE feature: the share of its unit decoder row's squared norm in the planted global subspace."""
    return planted.global_share(planted_workbench.sae(BACKBONE, SAE).W_dec).numpy()


@pytest.fixture(scope="module")
def planted_scope(planted_workbench: Workbench, global_share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(features with a clear planted scope and a CDS, True where that scope is global)``.

    Features with 20-80% of their decoder row in the global subspace have no clear scope and are left out.
    """
    cds = planted_workbench.run("cds", BACKBONE, SAE).details[0].cds
    local, global_ = SCOPE_CUTS
    clear = np.flatnonzero(np.isfinite(cds) & ((global_share < local) | (global_share > global_)))
    return clear, global_share[clear] > global_


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (average ranks for ties)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    ranks = rankdata(scores)
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def test_auroc_helper_matches_pairwise_count() -> None:
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.2])
    positive = np.array([False, True, False, True, False, False])
    pairs = [(p, n) for p in scores[positive] for n in scores[~positive]]
    by_count = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert auroc(scores, positive) == pytest.approx(by_count)


def test_cds_separates_global_from_local_features(planted_workbench: Workbench,
                                                  planted_scope: tuple[np.ndarray, np.ndarray]) -> None:
    features, is_global = planted_scope
    cds = planted_workbench.run("cds", BACKBONE, SAE).details[0].cds[features]
    assert is_global.sum() >= 5, f"only {is_global.sum()} scored features lie mostly in the planted global subspace"
    assert (~is_global).sum() >= 100
    area = auroc(cds, is_global)
    assert area >= 0.95, f"CDS ranks global features above local ones with AUROC {area:.3f} only"


def test_partition_puts_global_features_in_high_group(planted_workbench: Workbench,
                                                      planted_scope: tuple[np.ndarray, np.ndarray]) -> None:
    scores, groups = planted_workbench.run("cds", BACKBONE, SAE).details
    cds = scores.cds
    features, is_global = planted_scope
    in_high = np.isin(features, groups.high)
    assert np.array_equal(in_high, cds[features] > groups.gamma)
    assert in_high[is_global].mean() >= 0.8, f"gamma={groups.gamma:.3f}: global features in high group " \
                                             f"{in_high[is_global].sum()}/{is_global.sum()}"
    assert (~in_high[~is_global]).mean() >= 0.8, f"gamma={groups.gamma:.3f}: local features in low group " \
                                                 f"{(~in_high[~is_global]).sum()}/{(~is_global).sum()}"


def test_tau_separates_exactly_the_planted_outliers(planted_workbench: Workbench, planted: PlantedBackbone) -> None:
    tau = planted_workbench.tau(BACKBONE)
    truth = planted_outlier_mask(planted_workbench, planted, "eval")
    norms = np.linalg.norm(np.asarray(planted_workbench.tokens(BACKBONE, "eval").tokens[:], dtype=np.float64), axis=-1)
    assert truth.any() and (~truth).any()
    assert np.array_equal(norms > tau, truth), (
        f"tau={tau:.3f}: {int(((norms > tau) & ~truth).sum())} normal tokens above, "
        f"{int((truth & (norms <= tau)).sum())} planted outliers at or below")


def test_awcds_rises_in_the_top_norm_bins(planted_workbench: Workbench) -> None:
    table = planted_workbench.run("awcds", BACKBONE, SAE).details
    bins = table[~table["is_top"]]
    median = float(bins.loc[(bins["pct_lo"] <= 50) & (bins["pct_hi"] > 50), "mean_awcds"].iloc[0])
    top_percent = float(table.loc[table["is_top"], "mean_awcds"].iloc[0])
    last_bin = float(bins["mean_awcds"].iloc[-1])
    assert median > 0
    assert top_percent > 3 * median, table.to_string()
    assert last_bin > 2 * median, table.to_string()  # the last 5% bin is half planted outliers


@pytest.mark.parametrize("shift", PIPELINE_SCALE.attention_emd.shifts)
def test_outlier_attention_moves_more_under_shift(planted_workbench: Workbench, shift: int) -> None:
    result = planted_workbench.run("attention_emd", BACKBONE, shifts=(shift,)).per_shift[shift]
    assert result.n_outlier > 0 and result.n_non_outlier > 0
    assert result.outlier > 5 * result.non_outlier, result


# task -> (metric prefix, higher is better, least harm removing the low-CDS group must do)
DENSE_REMOVAL = {"seg": ("seg_miou", True, 20.0), "depth": ("depth_rmse", False, 0.1)}


# TopK's cases train a second SAE and its probes (two minutes on 2 cores): make test-bench-scale runs them
@pytest.mark.parametrize("sae_name", ["batchtopk", pytest.param("topk", marks=pytest.mark.bench_scale)])
@pytest.mark.parametrize("task", list(DENSE_REMOVAL))
def test_removing_low_cds_group_hurts_dense_tasks_most(planted_workbench: Workbench, task: str, sae_name: str) -> None:
    metrics = planted_workbench.run("removal_probes", BACKBONE, sae_name, tasks=(task,)).quantities()
    name, higher_is_better, least_low_harm = DENSE_REMOVAL[task]
    sign = 1.0 if higher_is_better else -1.0  # harm > 0: the removal made the probe worse
    low_harm, high_harm = (sign * (metrics[f"{name}_original"] - metrics[f"{name}_{group}_removed"])
                           for group in ("low", "high"))
    assert low_harm > least_low_harm and low_harm > 3 * high_harm, metrics
