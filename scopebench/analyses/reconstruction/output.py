from __future__ import annotations

from typing import Optional

from scopebench.analyses.base import AnalysisOutput, quantity

FVU_NORMALISATION = (
    "dataset-level: FVU_T = sum_t ||x_t - xhat_t||^2 / sum_t ||x_t - mu_T||^2 over the token set T, mu_T the "
    "per-dimension mean over T (not per token, not per batch); A = all patch tokens, O = tokens with norm > tau"
)


class ReconstructionOutput(AnalysisOutput):
    fvu_a: Optional[float] = quantity("FVU over all patch tokens (dataset-level normalisation: fvu_normalisation)", "unitless",
                                      column="FVU_A", default=None)
    fvu_o: Optional[float] = quantity("FVU over outlier tokens (norm > tau)", "unitless", column="FVU_O",
                                      default=None)
    l0_a: Optional[float] = quantity("mean number of non-zero latents per token, all tokens", "latents",
                                     column="L0_A", default=None)
    l0_o: Optional[float] = quantity("mean number of non-zero latents per token, outlier tokens", "latents",
                                     column="L0_O", default=None)
    cs_a: Optional[float] = quantity("mean cosine similarity of token and reconstruction, all tokens", "cosine",
                                     column="CS_A", default=None)
    cs_o: Optional[float] = quantity("mean cosine similarity of token and reconstruction, outlier tokens",
                                     "cosine", column="CS_O", default=None)
    dead_pct: Optional[float] = quantity("percent of SAE latents that never fire on the evaluation tokens",
                                         "percent", column="dead %", default=None)
    dense_pct: Optional[float] = quantity("percent of SAE latents that fire on more than 10% of the evaluation "
                                          "tokens", "percent", default=None)
    o_top1_share: Optional[float] = quantity(
        "outlier tokens' mean share of the squared code in its largest latent, max_j a_j^2 / sum_j a_j^2 (1: one "
        "latent codes the token)", "unitless", column="O top1", default=None)
    o_shared_latents: Optional[float] = quantity("latents that fire on more than half of the outlier tokens",
                                                 "latents", default=None)
    dict_size: Optional[float] = quantity("number of SAE latents", "latents", default=None)
    n_tokens: Optional[float] = quantity("evaluation patch tokens (set A)", "tokens", default=None)
    n_outlier: Optional[float] = quantity("outlier tokens among them (set O)", "tokens", default=None)
    tau: Optional[float] = quantity("outlier threshold applied to the token L2 norm", "L2 norm", default=None)
    fvu_normalisation: str = FVU_NORMALISATION
