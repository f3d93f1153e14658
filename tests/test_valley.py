"""The valley threshold's bimodality test (scopebench.analyses.valley) and auto_gamma on unimodal / bimodal CDS."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import binom

from scopebench.analyses.cds.partition import auto_gamma
from scopebench.analyses.valley import UnimodalError, _log_binomial_tail, histogram_valley, valley_test

SEEDS = range(50)

UNIMODAL = {
    "log gamma(20)": lambda rng: np.log(rng.gamma(20, 1.0, 2000)),  # skewed left: the old rule cut its low tail
    "beta(2, 12)": lambda rng: rng.beta(2, 12, 512),  # skewed right, few values: bumps in the tail
    "exponential": lambda rng: rng.exponential(1.0, 3000),  # mode at the edge
    "uniform": lambda rng: rng.uniform(0.0, 1.0, 2000),  # flat: the unimodal case closest to a valley
    "student t(3)": lambda rng: rng.standard_t(3, 5000),  # heavy tails stretch the grid
}


@pytest.mark.parametrize("name", list(UNIMODAL))
def test_unimodal_samples_get_no_valley_for_any_seed(name: str) -> None:
    draw = UNIMODAL[name]
    for seed in SEEDS:
        with pytest.raises(UnimodalError, match="unimodal"):
            histogram_valley(draw(np.random.default_rng(seed)), what=name)


def test_auto_gamma_refuses_unimodal_beta_cds_for_every_seed() -> None:
    # the case: 512 features, CDS ~ beta(2, 12); the old rule made a "high" group in 27 of 50 seeds
    for seed in SEEDS:
        with pytest.raises(UnimodalError, match="CDS values look unimodal"):
            auto_gamma(np.random.default_rng(seed).beta(2, 12, 512))


def low_high_cds(seed: int, n_low: int = 900, n_high: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """A dominant low-CDS mode (beta(2, 30), mean 0.06) and a separate high mode around 0.6."""
    rng = np.random.default_rng(seed)
    return rng.beta(2, 30, n_low), np.clip(rng.normal(0.6, 0.05, n_high), 0, 1)


@pytest.mark.parametrize("n_high", [100, 50])
def test_auto_gamma_finds_the_valley_of_a_low_high_cds_mix_for_every_seed(n_high: int) -> None:
    for seed in SEEDS:
        low, high = low_high_cds(seed, n_high=n_high)
        cds = np.concatenate([low, high, [np.nan] * 3])
        gamma = auto_gamma(cds)
        assert low.max() < gamma < high.min(), f"seed {seed}: gamma={gamma:.3f}"


def test_a_mode_of_fifty_values_facing_an_empty_valley_is_significant() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.0, 1.0, 1950), rng.normal(12.0, 1.0, 50)])
    test = valley_test(x)
    assert test.p_value < 1e-15
    assert test.low_mode[1] <= test.valley[0] < test.valley[1] <= test.high_mode[0]
    assert x[:1950].max() < test.valley[1] and test.valley[0] < x[1950:].min()
    assert valley_test(x[:1950]).p_value == 1.0


def test_max_upper_fraction_skips_valleys_below_a_majority() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.0, 0.1, 300), rng.normal(3.0, 0.1, 700)])  # upper mode: 70%
    assert 0.3 < histogram_valley(x) < 2.7
    assert valley_test(x, max_upper_fraction=0.5).p_value == 1.0
    with pytest.raises(UnimodalError, match="less than 50% of them above it"):
        histogram_valley(x, max_upper_fraction=0.5)


def brute_force_p_value(x: np.ndarray, n_bins: int) -> tuple[float, int]:
    """The documented statistic, triple by triple: min over I1 < Iv < I2 of max(p1, p2), times the triple count."""
    x = np.sort(x)
    counts, _ = np.histogram(x[1:-1], bins=n_bins, range=(x[0], x[-1]))
    windows = [(a, b) for a in range(n_bins) for b in range(a + 1, n_bins + 1)]

    def p(mode: tuple[int, int], valley: tuple[int, int]) -> float:
        k, kv = counts[mode[0] : mode[1]].sum(), counts[valley[0] : valley[1]].sum()
        w, wv = mode[1] - mode[0], valley[1] - valley[0]
        return float(binom.sf(k - 1, k + kv, w / (w + wv))) if k > 0 else 1.0

    best, n_tests = 1.0, 0
    for one, valley, two in combinations(windows, 3):
        if one[1] <= valley[0] and valley[1] <= two[0]:
            n_tests += 1
            best = min(best, max(p(one, valley), p(two, valley)))
    return min(1.0, best * n_tests), n_tests


@pytest.mark.parametrize("seed", range(3))
def test_scan_matches_the_documented_statistic_by_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # a weak second mode, so that the p-value is neither 1 nor underflowing
    x = np.concatenate([rng.normal(0.0, 1.0, 150), rng.normal(5.0, 0.3, 14)])
    expected, n_tests = brute_force_p_value(x, n_bins=8)
    test = valley_test(x, n_bins=8)
    assert test.n_tests == n_tests
    assert 1e-12 < expected < 1.0
    assert test.p_value == pytest.approx(expected, rel=1e-9)


def test_binomial_tail_is_exact_or_an_upper_bound_where_scipy_underflows() -> None:
    k = np.array([3.0, 40.0, 5000.0, 90_000.0])
    m = np.array([10.0, 50.0, 5000.0, 100_000.0])
    q = np.array([0.5, 0.2, 0.5, 0.8])
    got = _log_binomial_tail(k, m, q)
    exact = [logsumexp(binom.logpmf(np.arange(int(ki), int(mi) + 1), mi, qi)) for ki, mi, qi in zip(k, m, q)]
    np.testing.assert_allclose(got[:2], exact[:2], rtol=1e-9)
    assert np.isfinite(got).all()
    assert (got[2:] >= np.array(exact[2:]) - 1e-9).all() and (got[2:] <= np.array(exact[2:]) + 1.0).all()
