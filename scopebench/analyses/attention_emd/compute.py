from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from scopebench import distributed
from scopebench.analyses.attention_emd.config import AttentionEMDConfig
from scopebench.analyses.attention_emd.output import AttentionEMDOutput, ShiftEMD
from scopebench.analyses.base import Inputs
from scopebench.analyses.attention_emd.accumulator import AttentionEMDAccumulator
from scopebench.pipeline.extract import iter_forward, scc_views
from scopebench.analyses.outliers import outlier_mask
from scopebench.pipeline.scc import overlap_index
from scopebench.precision import with_precision


def shift_emd(bench: Inputs, backbone: str, shift: int, config: AttentionEMDConfig) -> ShiftEMD:
    """Attention EMD at one shift; persisted in the activation store (hours at paper scale)."""
    model, data, tau = bench.backbone(backbone), bench.dataset(backbone, "attention"), bench.tau(backbone)
    key = {"analysis": "attention_emd", "backbone": backbone, "weights": model.weights_id, "layer": model.spec.layer,
           "data": data.identity, "shift": shift, "tau": tau, "version": 2,
           "config": config.model_dump(mode="json", exclude={"shifts"})}
    # fp32 memos keep the keys they had before the option
    return bench.persisted(with_precision(key, bench.precision), ShiftEMD,
                           lambda: _shift_emd(bench, backbone, shift, config))


def _shift_emd(bench: Inputs, backbone: str, shift: int, config: AttentionEMDConfig) -> ShiftEMD:
    """The backbone's attention streamed from the SCC forward loop into the accumulator (never cached whole)."""
    model, tau = bench.backbone(backbone), bench.tau(backbone)
    data = bench.dataset(backbone, "attention")
    spec = model.spec
    n_images, size = min(config.images, len(data)), config.batch_images
    # under torchrun each rank takes whole batches (the same batches as one process), then the sums are reduced
    starts = distributed.share(range(0, n_images, size))
    rows = np.concatenate([np.arange(start, min(start + size, n_images)) for start in starts]) if starts \
        else np.arange(0)
    accumulator = AttentionEMDAccumulator(overlap_index(spec.grid_side, shift), spec.n_prefix, method=config.method)
    with torch.inference_mode(), tqdm(total=len(rows), desc=f"attention EMD s={shift}", unit="img",
                                      disable=not bench.progress or not distributed.is_main()) as bar:
        for batch_rows, views in iter_forward(model, data, rows, scc_views(model, shift), config.batch_images,
                                              bench.device, attention=True, workers=bench.workers,
                                              precision=bench.precision):
            out_a, out_b = views["_a"], views["_b"]
            mask = torch.from_numpy(outlier_mask(out_a.tokens.float().norm(dim=-1).cpu().numpy(), tau))
            accumulator.update(out_a.attention.cpu(), out_b.attention.cpu(), mask)
            bar.update(len(batch_rows))
    accumulator.sum_over_ranks()
    result = accumulator.result()
    return ShiftEMD(outlier=float(result.mean_outlier), non_outlier=float(result.mean_non_outlier),
                    n_outlier=int(result.counts["outlier"]), n_non_outlier=int(result.counts["non_outlier"]))


def compute(bench: Inputs, backbone: str, sae: None, config: AttentionEMDConfig, *,
            shifts: tuple[int, ...] | None = None) -> AttentionEMDOutput:
    """EMD at ``shifts`` (default: every shift of the config)."""
    chosen = config.shifts if shifts is None else shifts
    unknown = sorted(set(chosen) - set(config.shifts))
    if unknown:
        raise ValueError(f"shifts {unknown} are not in this scale's attention_emd.shifts {config.shifts}")
    return AttentionEMDOutput(per_shift={s: shift_emd(bench, backbone, s, config) for s in chosen},
                              tau=bench.tau(backbone))
