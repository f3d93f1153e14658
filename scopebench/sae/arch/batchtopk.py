"""BatchTopK (Bussmann et al. 2024): the top ``k * batch`` activations across the batch; a global threshold
at inference, estimated after training."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from pydantic import Field

from scopebench.sae.arch._registry import register
from scopebench.sae.arch.topk import TopKConfig, TopKSAE
from scopebench.sae.sparse_ops import Selection, batch_topk_flat_indices
from scopebench.sae.validation import ConfigInt


class BatchTopKConfig(TopKConfig):
    architecture: Literal["batchtopk"] = "batchtopk"  # type: ignore[assignment]
    calibration_batches: ConfigInt = Field(
        20, gt=0, description="a positive integer: batches drawn after training to estimate BatchTopK's inference "
                              "threshold (mean of each batch's smallest kept activation)")

    @property
    def n_calibration_batches(self) -> int:
        return self.calibration_batches


class BatchTopKSAE(TopKSAE):
    """Top ``k * batch`` activations across the batch (Bussmann et al. 2024).

    At inference a global threshold replaces the batch selection, so codes do not depend
    on the batch.  As in the paper it is the mean, over batches, of the smallest
    activation the batch selection keeps, estimated once training is over
    (:meth:`calibrate_`) so it describes the final weights.  Until then, inference falls
    back to per-token top-k.
    """

    config_schema = BatchTopKConfig

    def __init__(self, d_in: int, d_sae: int, hparams: dict[str, Any] | None = None) -> None:
        super().__init__(d_in, d_sae, hparams)
        self.register_buffer("threshold", torch.tensor(-1.0))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if float(self.threshold) < 0:
            return super().encode(x)
        # the threshold is a mean of positive values, so >= 0 and the output is non-negative;
        # one fused pass instead of where/zeros_like/clamp (about 2x faster on large batches)
        return torch.threshold(self.pre_activations(x), float(self.threshold), 0.0)

    def _select(self, pre: torch.Tensor) -> Selection:
        flat = batch_topk_flat_indices(pre, self.k * pre.shape[0])
        return Selection.from_flat_indices(flat, pre.shape[0], self.d_sae)

    @torch.no_grad()
    def calibrate_(self, batches: Iterable[torch.Tensor]) -> None:
        """Set the inference threshold: mean over ``batches`` of the smallest positive kept activation.

        An exponential average taken during training would be dominated by the early,
        still-changing weights whenever the run is shorter than ~1/(1 - beta) steps, and
        the inference L0 would then miss ``k`` (by 3x on the planted default).
        """
        minima = []
        for x in batches:
            _, _, _, values = self.sparse_forward(x)
            positive = values[values > 0]
            if positive.numel():
                minima.append(positive.min())
        if not minima:
            raise ValueError("no calibration batch kept a positive activation; the SAE is not trained")
        self.threshold.copy_(torch.stack(minima).mean())

    @torch.no_grad()
    def fold_input_scale_(self, scale: float) -> None:
        super().fold_input_scale_(scale)
        if float(self.threshold) >= 0:
            self.threshold.div_(scale)


BatchTopKRecipe = register(BatchTopKSAE)
