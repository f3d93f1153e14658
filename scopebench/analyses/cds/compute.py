from __future__ import annotations

import math

import numpy as np

from scopebench.analyses.base import Inputs
from scopebench.analyses.cds.config import CDSConfig
from scopebench.analyses.cds.output import CDSHistogram, CDSOutput
from scopebench.backbones import get_spec
from scopebench.analyses.cds.scores import compute_cds
from scopebench.analyses.cds.partition import partition, resolve_gamma
from scopebench.analyses.valley import UnimodalError


HISTOGRAM_BINS = 50


def histogram(cds: np.ndarray) -> CDSHistogram:
    """Equal-width bins from 0 to the largest finite CDS (features without a CDS left out)."""
    scored = cds[np.isfinite(cds)]
    counts, edges = np.histogram(scored, bins=HISTOGRAM_BINS, range=(0.0, float(scored.max()) if scored.size else 1.0))
    return CDSHistogram(edges=edges.tolist(), counts=counts.tolist())


def compute(bench: Inputs, backbone: str, sae: str, config: CDSConfig) -> CDSOutput:
    pair = bench.scc_tokens(backbone, config.shift)
    scores = compute_cds(bench.sae(backbone, sae), pair.tokens_a, pair.tokens_b, pair.overlap, k=config.k,
                         device=bench.device, emd_method=config.emd_method, progress=bench.progress)
    try:
        gamma = resolve_gamma(get_spec(backbone).gamma, scores.cds)
    except UnimodalError as err:
        # an SAE whose CDS histogram has no second mode has no scope partition: its Table 4 numbers are
        # NaN (so Table 4's claim fails, it does not vanish) and the analyses that need groups cannot run
        out = CDSOutput(gamma=math.nan, n_low=math.nan, n_high=math.nan,
                        n_dead_cds=float((~np.isfinite(scores.cds)).sum()), histogram=histogram(scores.cds),
                        no_partition=str(err))
        out._details = (scores, None)
        return out
    groups = partition(scores.cds, gamma)
    out = CDSOutput(gamma=groups.gamma, n_low=groups.n_low, n_high=groups.n_high,
                    n_dead_cds=groups.n_dead, histogram=histogram(scores.cds))
    out._details = (scores, groups)
    return out
