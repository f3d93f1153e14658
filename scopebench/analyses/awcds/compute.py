from __future__ import annotations

import math

from scopebench.analyses.awcds.config import AwCDSConfig
from scopebench.analyses.awcds.output import AwCDSOutput, NormBin
from scopebench.analyses.base import Inputs
from scopebench.analyses.awcds.tokens import awcds_by_norm_percentile, token_awcds


def compute(bench: Inputs, backbone: str, sae: str, config: AwCDSConfig) -> AwCDSOutput:
    """awCDS on the CDS images (supplement D.1: "the same set of 1,000 images")."""
    scores, _ = bench.run("cds", backbone, sae).details
    per_token = token_awcds(bench.sae(backbone, sae), bench.tokens(backbone, "scc").tokens, scores.cds,
                            device=bench.device, progress=bench.progress)
    table = awcds_by_norm_percentile(per_token.norms, per_token.awcds, n_bins=config.n_bins,
                                     top_fraction=config.top_fraction)
    bins = table[~table["is_top"]]
    top = float(table.loc[table["is_top"], "mean_awcds"].iloc[0])
    median = float(bins.loc[(bins["pct_lo"] <= 50) & (bins["pct_hi"] > 50), "mean_awcds"].iloc[0])
    curve = [NormBin(bin=row.bin, pct_lo=row.pct_lo, pct_hi=row.pct_hi, is_top=bool(row.is_top),
                     mean_awcds=None if math.isnan(row.mean_awcds) else row.mean_awcds) for row in table.itertuples()]
    out = AwCDSOutput(awcds_top_bin=top, awcds_median_bin=median, curve=curve)
    out._details = table
    return out
