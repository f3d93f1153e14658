"""Threshold at the valley between two modes of a 1-D distribution, if there are two.

Used twice with the same rule: the outlier threshold ``tau="auto"`` (on log token norms)
and the CDS threshold ``gamma`` when the paper gives none (on CDS values).

Two steps:

1. **Is there a valley at all?**  A smoothed histogram of a unimodal sample still has
   bumps (a few hundred skewed values, or the sparse tail of a few thousand, show
   several), so a valley is accepted only when a test says it is there, at a
   family-wise error rate ``alpha`` whatever the sample size.  The test (a scan over
   histogram windows with exact binomial tests, see :func:`valley_test`) uses only one
   property of unimodal densities ``f``: for any three disjoint intervals
   ``I1 < Iv < I2`` the mean density over the middle one is at least the smaller of the
   other two, ``P(Iv)/|Iv| >= min(P(I1)/|I1|, P(I2)/|I2|)``.  A valley is a middle interval
   with significantly fewer values than both sides allow.
2. **Where is it?**  The lowest point, between the two modes the test found, of a
   histogram of ``log(1 + count)`` smoothed by a Gaussian (so a small second mode, outliers
   being ~2% of tokens, shapes the curve as much as the bulk); the middle of the floor
   when the valley is empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.stats import binom

VALLEY_ALPHA = 1e-3  # family-wise rate at which any unimodal sample is declared bimodal (at most)
SCAN_BINS = 32  # the test's grid: windows are runs of these equal-width bins


class UnimodalError(ValueError):
    """The distribution shows no second mode, so no valley threshold exists."""


@dataclass(frozen=True)
class ValleyTest:
    """The most significant valley of :func:`valley_test`: ``(low, high)`` value ranges of its three windows."""

    p_value: float  # Bonferroni-adjusted over every window triple the scan looked at (capped at 1)
    low_mode: tuple[float, float]
    valley: tuple[float, float]
    high_mode: tuple[float, float]
    n_tests: int


def _log_binomial_tail(k: np.ndarray, m: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``log P(Binomial(m, q) >= k)``, elementwise.

    Where scipy's ``logsf`` underflows (e.g. 5,000 outliers against an empty valley) the
    geometric bound ``pmf(k) / (1 - r)``, ``r = (m - k) q / ((k + 1)(1 - q))`` the ratio of
    successive terms, is used instead: an upper bound, so the test stays conservative.
    """
    out = binom.logsf(k - 1, m, q)
    bad = ~np.isfinite(out)
    if bad.any():
        kb, mb, qb = k[bad], m[bad], q[bad]
        ratio = (mb - kb) * qb / ((kb + 1) * (1 - qb))
        out[bad] = binom.logpmf(kb, mb, qb) - np.log1p(-np.minimum(ratio, 1.0 - 1e-12))
    return np.minimum(out, 0.0)


@lru_cache(maxsize=4)
def _scan_geometry(n_bins: int) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], int]:
    """Windows ``[start, stop)`` of ``n_bins`` bins, the (mode, valley) window pairs on each side, and the triple count.

    A pair is ``(mode index, valley index, w_mode / (w_mode + w_valley))``, the mode window
    ending before the valley starts (``"left"``) or starting after it stops (``"right"``).
    """
    start, stop = np.triu_indices(n_bins + 1, 1)
    width = (stop - start).astype(np.float64)
    mode, valley = np.meshgrid(np.arange(start.size), np.arange(start.size), indexing="ij")
    pairs = {}
    for side, ok in (("left", stop[:, None] <= start[None, :]), ("right", start[:, None] >= stop[None, :])):
        m, v = mode[ok], valley[ok]
        pairs[side] = (m, v, width[m] / (width[m] + width[v]))
    n_left = np.bincount(pairs["left"][1], minlength=start.size)
    n_right = np.bincount(pairs["right"][1], minlength=start.size)
    return start, stop, pairs, int((n_left * n_right).sum())


def valley_test(values: np.ndarray, *, n_bins: int = SCAN_BINS, max_upper_fraction: float = 1.0) -> ValleyTest:
    """Scan test of unimodality: the best valley of ``values`` and its p-value.

    The values' range ``[x_(1), x_(n)]`` is cut into ``n_bins`` equal bins; a *window* is
    any run of them.  For a window triple ``I1 < Iv < I2`` (disjoint, ordered) with
    counts ``N1, Nv, N2`` and widths ``w1, wv, w2`` (in bins), unimodality implies
    ``P(I1)/w1 <= P(Iv)/wv`` or ``P(I2)/w2 <= P(Iv)/wv`` (see the module doc).  Given
    ``N1 + Nv = m``, ``N1`` is ``Binomial(m, P(I1)/(P(I1)+P(Iv)))``, so under the first
    alternative ``p1 = P(Binomial(m, w1/(w1+wv)) >= N1)`` is a valid p-value (an exact
    conditional test, conservative when the inequality is strict); likewise ``p2`` for
    ``I2``.  The triple rejects unimodality at level ``t`` when ``max(p1, p2) <= t``
    (an intersection-union test), and the returned p-value is the smallest such max over
    all ``n_tests`` triples times ``n_tests`` (Bonferroni): ``P(p_value <= alpha) <= alpha``
    for every unimodal distribution and every sample size.  The two extreme values only
    set the grid and are not counted, which keeps the test exact (given them, the rest are
    i.i.d. from the density truncated to the grid, still unimodal).

    Power grows with the sample: 50 values in a narrow mode facing an empty valley four
    times as wide give ``p1 <= 5^-50``, where a histogram with 30 values per bin
    wobbles by ``sqrt(30)``.  ``max_upper_fraction`` keeps only valleys with less than that
    share of the values at or above the valley window's start (the upper mode a minority).
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    start, stop, pairs, n_tests = _scan_geometry(n_bins)
    counts, edges = np.histogram(x[1:-1], bins=n_bins, range=(x[0], x[-1]))
    cumulative = np.concatenate([[0], np.cumsum(counts)])
    n = (cumulative[stop] - cumulative[start]).astype(np.float64)
    log_p = {}
    for side, (mode, valley, q) in pairs.items():
        k, trials = n[mode], n[mode] + n[valley]
        side_log_p = np.zeros((n.size, n.size))  # [mode, valley]; 0 (p = 1) where the pair cannot reject
        # Only a mode window denser than the valley can give a small p-value.  The Chernoff
        # bound log P(Bin(m, q) >= k) <= -m KL(k/m || q) stands in for the exact tail where
        # the exact one cannot bring the adjusted p-value below 1, since the tail is at least
        # pmf(k) >= exp(-m KL) / (m + 1) (Cover & Thomas, Thm 11.1.4): the same result, faster.
        dense = k > q * trials
        k, trials, q, mode, valley = k[dense], trials[dense], q[dense], mode[dense], valley[dense]
        share = k / trials
        with np.errstate(divide="ignore", invalid="ignore"):
            rest = np.where(share < 1, (1 - share) * np.log((1 - share) / (1 - q)), 0.0)
        bound = np.minimum(-trials * (share * np.log(share / q) + rest), 0.0)
        exact = bound - np.log1p(trials) < -np.log(n_tests)
        bound[exact] = _log_binomial_tail(k[exact], trials[exact], q[exact])
        side_log_p[mode, valley] = bound
        log_p[side] = side_log_p
    left, right = log_p["left"], log_p["right"]
    evidence = np.maximum(left.min(axis=0), right.min(axis=0))
    above = (x.size - 2 - cumulative[start]) / max(x.size - 2, 1)  # share of the values from the valley up
    evidence[above >= max_upper_fraction] = 0.0
    v = int(np.argmin(evidence))
    lo, hi = int(np.argmin(left[:, v])), int(np.argmin(right[:, v]))

    def span(i: int) -> tuple[float, float]:
        return float(edges[start[i]]), float(edges[stop[i]])

    p_value = float(min(1.0, np.exp(evidence[v] + np.log(n_tests))))
    return ValleyTest(p_value=p_value, low_mode=span(lo), valley=span(v), high_mode=span(hi), n_tests=n_tests)


def histogram_valley(values: np.ndarray, *, bins: int = 100, smooth_bins: float = 2.0, alpha: float = VALLEY_ALPHA,
                     max_upper_fraction: float = 1.0, what: str = "values") -> float:
    """Value at the valley between two modes of ``values``, located on a smoothed ``bins``-bin histogram.

    Raises :class:`UnimodalError` (naming ``what``) unless :func:`valley_test` finds a
    valley at family-wise level ``alpha`` (default 1e-3: at most one unimodal sample in a
    thousand, of any size, gets a threshold); ``max_upper_fraction`` is passed on to it.
    The threshold is the lowest point of the Gaussian-smoothed (``smooth_bins``) ``log(1 +
    count)`` histogram between the centres of the test's two mode windows.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < 3 or x.min() == x.max():
        raise UnimodalError(f"cannot find a valley in {what}: need at least three finite values, not all equal, "
                            f"got {x.size} values; set the threshold explicitly")
    test = valley_test(x, max_upper_fraction=max_upper_fraction)
    if not test.p_value <= alpha:
        minority = f" with less than {max_upper_fraction:.0%} of them above it" if max_upper_fraction < 1 else ""
        raise UnimodalError(f"{what} look unimodal: no valley{minority} is significant among {x.size} values "
                            f"(scan test p={test.p_value:.2g} > alpha={alpha:g}), so there is no valley to "
                            "threshold at; set the threshold explicitly (e.g. the backbone spec's tau / gamma)")
    counts, edges = np.histogram(x, bins=bins)
    # empty bins beyond the ends (mode="constant"), so the smoothing does not reflect mass back in
    curve = gaussian_filter1d(np.log1p(counts.astype(np.float64)), smooth_bins, mode="constant")
    centres = 0.5 * (edges[:-1] + edges[1:])
    between = np.flatnonzero((centres >= sum(test.low_mode) / 2) & (centres <= sum(test.high_mode) / 2))
    if between.size == 0:  # both mode windows' centres within one fine bin: take the valley window's middle
        return float(sum(test.valley) / 2)
    segment = curve[between]
    lowest = between[np.isclose(segment, segment.min(), rtol=0.0, atol=1e-9)]
    return float(np.interp(0.5 * (lowest[0] + lowest[-1]), np.arange(bins), centres))  # middle of a flat floor
