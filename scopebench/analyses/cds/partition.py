"""The CDS threshold gamma and the low/high-CDS feature partition (paper Table 4).

low-CDS = CDS <= gamma; high-CDS = CDS > gamma; features with NaN CDS (dead or never
scored) belong to neither group and are only counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scopebench.analyses.valley import histogram_valley


@dataclass(frozen=True)
class Partition:
    low: np.ndarray  # int64 feature indices with CDS <= gamma
    high: np.ndarray  # int64 feature indices with CDS > gamma
    gamma: float
    n_dead: int  # features with NaN CDS, in neither group

    @property
    def n_low(self) -> int:
        return int(self.low.size)

    @property
    def n_high(self) -> int:
        return int(self.high.size)


def auto_gamma(cds: np.ndarray, *, bins: int = 50, smooth_bins: float = 1.5) -> float:
    """gamma at the valley between the low-CDS and high-CDS modes of the CDS histogram.

    The valley must pass :func:`scopebench.analyses.valley.valley_test` (a scan of histogram windows
    with exact binomial tests, Bonferroni-adjusted p <= 1e-3, valid for any unimodal
    distribution and sample size): a skewed unimodal CDS histogram of a few hundred
    features has bumps but no significant valley.  Raises
    :class:`scopebench.analyses.valley.UnimodalError` when there is none; then fix gamma in the
    backbone spec.
    """
    return histogram_valley(cds, bins=bins, smooth_bins=smooth_bins, what="CDS values")


def resolve_gamma(spec_gamma: float | None, cds: np.ndarray) -> float:
    """The backbone's fixed gamma when the paper gives one, else :func:`auto_gamma` of ``cds``."""
    if spec_gamma is None:
        return auto_gamma(cds)
    gamma = float(spec_gamma)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1] like CDS itself, got {spec_gamma}")
    return gamma


def partition(cds: np.ndarray, gamma: float) -> Partition:
    """Split features into low-CDS (``<= gamma``) and high-CDS (``> gamma``) index sets."""
    cds = np.asarray(cds, dtype=np.float64)
    if cds.ndim != 1:
        raise ValueError(f"cds must be a 1-D array over SAE features, got shape {cds.shape}")
    if not np.isfinite(gamma):
        raise ValueError(f"gamma must be finite, got {gamma}")
    scored = np.isfinite(cds)
    return Partition(low=np.flatnonzero(scored & (cds <= gamma)), high=np.flatnonzero(scored & (cds > gamma)),
                     gamma=float(gamma), n_dead=int((~scored).sum()))
