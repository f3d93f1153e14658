"""Paired bootstrap intervals of a probe score's change (scopebench.probes.bootstrap).

The vectorised statistics are checked against a plain loop over the same resampled indices,
the interval's coverage against a known true gain, and its dependence on the order of the
test items.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scopebench.probes.bootstrap import (
    paired_differences,
    paired_interval,
    percentile_interval,
    resampled_indices,
    resampled_miou,
    resampled_top1,
)
from scopebench.probes.config import BootstrapConfig
from scopebench.probes.metrics import miou_from_confusion

pytestmark = pytest.mark.usefixtures("one_thread")


def paired_correctness(n: int, p_original: float, p_changed: float, share: float,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Correctness of two probes on ``n`` items: P(correct) ``p_original`` and ``p_changed`` exactly.

    Item difficulty ``u`` is uniform; the changed probe sees the same ``u`` on a ``share`` of the
    items and a fresh uniform on the others, so it is uniform too and the pair is correlated.
    """
    u = torch.rand(n, generator=generator)
    fresh = torch.rand(n, generator=generator)
    v = torch.where(torch.rand(n, generator=generator) < share, u, fresh)
    return u < p_original, v < p_changed


def confusions(n: int, n_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image confusion counts ``[n, C, C]``; the last class never occurs (absent classes are skipped)."""
    counts = torch.randint(0, 6, (n, n_classes, n_classes), generator=generator)
    counts[:, -1, :] = 0
    counts[:, :, -1] = 0
    return counts


def loop_interval(original: torch.Tensor, changed: torch.Tensor, metric, indices: torch.Tensor,
                  confidence: float) -> tuple[float, float]:
    """The same interval resample by resample with the scalar metric, and numpy's percentiles."""
    differences = [metric(changed[row]) - metric(original[row]) for row in indices]
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(np.array(differences, dtype=np.float64), [tail, 100 - tail])
    return float(lo), float(hi)


def test_top1_interval_equals_a_loop_over_the_same_resamples() -> None:
    original, changed = paired_correctness(60, 0.6, 0.7, 0.5, torch.Generator().manual_seed(0))
    config = BootstrapConfig(resamples=400, confidence=0.9, seed=3)
    indices = resampled_indices(60, config.resamples, config.seed)
    expected = loop_interval(original, changed, lambda c: int(c.sum()) / c.numel(), indices, config.confidence)
    # float64 throughout: the per-resample accuracies are exact hit counts over 60, so the two paths
    # differ only in the rounding of a division and of the quantile interpolation (~1e-16)
    assert paired_interval(original, changed, resampled_top1, config) == pytest.approx(expected, abs=1e-12)


def test_miou_interval_equals_a_loop_over_the_same_resamples() -> None:
    generator = torch.Generator().manual_seed(1)
    original, changed = confusions(25, 4, generator), confusions(25, 4, generator)
    config = BootstrapConfig(resamples=300, seed=5)
    indices = resampled_indices(25, config.resamples, config.seed)
    expected = loop_interval(original, changed, lambda c: miou_from_confusion(c.sum(dim=0)), indices,
                             config.confidence)
    # the resampled confusion matrices are integer counts, exact in float64; IoUs of at most 3 classes
    # are averaged, a few ulps apart between the masked sum and the indexed mean
    assert paired_interval(original, changed, resampled_miou, config) == pytest.approx(expected, abs=1e-12)


def test_resamples_draw_every_index_with_replacement_from_the_seed() -> None:
    indices = resampled_indices(7, 500, seed=11)
    assert indices.shape == (500, 7) and indices.dtype == torch.long
    assert int(indices.min()) == 0 and int(indices.max()) == 6
    assert any(len(set(row.tolist())) < 7 for row in indices)  # with replacement: repeats occur
    assert torch.equal(indices, resampled_indices(7, 500, seed=11))
    assert not torch.equal(indices, resampled_indices(7, 500, seed=12))


def test_interval_covers_a_known_true_gain_in_most_repeats() -> None:
    """20 test sets of 500 items whose true top-1 gain is exactly +5 points.

    At a nominal 95%, fewer than 16 of 20 intervals covering the truth has probability
    below 2% even if the actual coverage were 92% (binomial). The intervals must not buy
    coverage with width: their mean width is within 15% of the normal-theory width
    2 z sd(d) / sqrt(n) of the paired differences d, from the true distribution of d.
    """
    n, p_original, p_changed, share = 500, 0.70, 0.75, 0.8
    config = BootstrapConfig(resamples=2000, confidence=0.95, seed=0)
    covered, widths = 0, []
    for repeat in range(20):
        original, changed = paired_correctness(n, p_original, p_changed, share,
                                               torch.Generator().manual_seed(100 + repeat))
        lo, hi = paired_interval(original, changed, resampled_top1, config.model_copy(update={"seed": repeat}))
        covered += lo <= p_changed - p_original <= hi
        widths.append(hi - lo)
    # the true law of d = changed - original: with prob. share both see u (d = 1 iff 0.70 <= u < 0.75),
    # else independent uniforms
    p_up = share * (p_changed - p_original) + (1 - share) * p_changed * (1 - p_original)
    p_down = (1 - share) * p_original * (1 - p_changed)
    sd = math.sqrt(p_up + p_down - (p_up - p_down) ** 2)
    assert covered >= 16, covered
    assert np.mean(widths) == pytest.approx(2 * 1.959964 * sd / math.sqrt(n), rel=0.15)


@pytest.mark.parametrize("statistic", [resampled_top1, resampled_miou])
def test_identical_scores_give_exactly_zero(statistic) -> None:
    generator = torch.Generator().manual_seed(2)
    scores = (torch.rand(40, generator=generator) < 0.5) if statistic is resampled_top1 else confusions(40, 3, generator)
    assert paired_interval(scores, scores.clone(), statistic, BootstrapConfig()) == (0.0, 0.0)


@pytest.mark.parametrize("statistic", [resampled_top1, resampled_miou])
def test_interval_does_not_depend_on_the_order_of_the_test_items(statistic) -> None:
    """Reordering the items (both probes alike) permutes which item each resampled index names.

    With the indices mapped through the same permutation every resample holds the same items,
    so the differences are identical; with the same seed's indices on the reordered items the
    resamples differ, and the interval moves only by Monte-Carlo error. At B = 2000 the 2.5% and
    97.5% quantiles' standard error is about 0.06 bootstrap standard deviations (normal
    approximation, sqrt(q (1 - q) / B) / phi(z_q)), so two runs' ends lie within 0.1 of the
    interval's width (3.9 standard deviations) with a wide margin.
    """
    generator = torch.Generator().manual_seed(4)
    if statistic is resampled_top1:
        original, changed = paired_correctness(400, 0.6, 0.65, 0.7, generator)
    else:
        original, changed = confusions(400, 4, generator), confusions(400, 4, generator)
    order = torch.randperm(400, generator=generator)
    position = torch.argsort(order)  # item j of the original order sits at position[j] after reordering
    indices = resampled_indices(400, 2000, seed=0)
    before = paired_differences(original, changed, statistic, indices)
    after = paired_differences(original[order], changed[order], statistic, position[indices])
    assert torch.equal(before, after)
    lo, hi = percentile_interval(before, 0.95)
    lo_reordered, hi_reordered = percentile_interval(
        paired_differences(original[order], changed[order], statistic, indices), 0.95)
    assert abs(lo_reordered - lo) < 0.1 * (hi - lo) and abs(hi_reordered - hi) < 0.1 * (hi - lo)


def test_unpaired_or_misshaped_input_is_refused() -> None:
    scores = torch.ones(10, dtype=torch.bool)
    with pytest.raises(ValueError, match="same test items"):
        paired_differences(scores, torch.ones(9, dtype=torch.bool), resampled_top1, resampled_indices(10, 5, 0))
    with pytest.raises(ValueError, match=r"\[B, n\] with n = 10"):
        paired_differences(scores, scores, resampled_top1, resampled_indices(9, 5, 0))
    with pytest.raises(ValueError, match="at least one item"):
        resampled_indices(0, 5, 0)
    with pytest.raises(ValueError, match="confidence"):
        percentile_interval(torch.zeros(5), 1.0)
