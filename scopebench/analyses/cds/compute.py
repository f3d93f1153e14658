from __future__ import annotations

from scopebench.analyses.base import Inputs
from scopebench.analyses.cds.config import CDSConfig
from scopebench.analyses.cds.output import CDSOutput
from scopebench.backbones import get_spec
from scopebench.analyses.cds.scores import compute_cds
from scopebench.analyses.cds.partition import partition, resolve_gamma


def compute(bench: Inputs, backbone: str, sae: str, config: CDSConfig) -> CDSOutput:
    pair = bench.scc_tokens(backbone, config.shift)
    scores = compute_cds(bench.sae(backbone, sae), pair.tokens_a, pair.tokens_b, pair.overlap, k=config.k,
                         device=bench.device, emd_method=config.emd_method, progress=bench.progress)
    groups = partition(scores.cds, resolve_gamma(get_spec(backbone).gamma, scores.cds))
    out = CDSOutput(gamma=groups.gamma, n_low=groups.n_low, n_high=groups.n_high,
                    n_dead_cds=groups.n_dead)
    out._details = (scores, groups)
    return out
