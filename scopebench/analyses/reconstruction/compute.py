from __future__ import annotations

import numpy as np
import torch

from scopebench.analyses.base import Inputs
from scopebench.analyses.reconstruction.config import ReconstructionConfig
from scopebench.analyses.reconstruction.output import ReconstructionOutput
from scopebench.analyses.reconstruction.metrics import reconstruction_metrics
from scopebench.analyses.outliers import outlier_mask


def compute(bench: Inputs, backbone: str, sae: str, config: ReconstructionConfig) -> ReconstructionOutput:
    model, tau = bench.sae(backbone, sae), bench.tau(backbone)
    acts = bench.tokens(backbone, "eval")

    def batches():
        for _, block in acts.iter_batches(config.batch_images):
            x = torch.from_numpy(np.array(block, dtype=np.float32)).reshape(-1, block.shape[-1])
            yield x, torch.from_numpy(outlier_mask(x.norm(dim=-1).numpy(), tau))
    m = reconstruction_metrics(model, batches(), device=bench.device)
    return ReconstructionOutput(
        fvu_a=m.fvu_all, fvu_o=m.fvu_outlier, l0_a=m.l0_all, l0_o=m.l0_outlier, cs_a=m.cos_all, cs_o=m.cos_outlier,
        dead_pct=100.0 * m.dead_fraction, dense_pct=100.0 * m.dense_fraction,
        o_top1_share=m.outlier_top1_share, o_shared_latents=m.outlier_shared_latents, dict_size=model.d_sae,
        n_tokens=m.n_all, n_outlier=m.n_outlier, tau=tau)
