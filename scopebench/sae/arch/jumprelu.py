"""JumpReLU (Rajamanoharan et al. 2024): per-latent thresholds trained with a straight-through estimator
and an L0 penalty."""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from scopebench.sae.arch._base import L0TargetConfig
from scopebench.sae.arch._registry import register
from scopebench.sae.dictionary import DictionarySAE
from scopebench.sae.validation import ConfigFloat


class JumpReLUConfig(L0TargetConfig):
    architecture: Literal["jumprelu"] = "jumprelu"
    init_threshold: ConfigFloat = Field(0.1, gt=0, description="a finite number > 0: the initial threshold")
    bandwidth: ConfigFloat = Field(0.05, gt=0, description="a finite number > 0: the straight-through kernel width")
    sparsity_coeff: ConfigFloat = Field(1e-3, ge=0, description="a finite number >= 0: the L0 penalty weight "
                                        "(with target_l0 set: its starting value, calibrated during training)")

    calibrated_coeff: ClassVar[str] = "sparsity_coeff"


class _JumpReLUFunction(torch.autograd.Function):
    """``pre * H(pre - theta)``; straight-through (rectangle kernel) gradient for ``theta``."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth: float):  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((pre - theta).abs() < eps / 2).to(grad.dtype) / eps
        grad_theta = (-theta * window * grad).sum(0)
        return grad * (pre > theta), grad_theta, None


class _StepFunction(torch.autograd.Function):
    """``H(pre - theta)``; straight-through gradient for ``theta`` only."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth: float):  # type: ignore[override]
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        pre, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((pre - theta).abs() < eps / 2).to(grad.dtype) / eps
        return torch.zeros_like(pre), (-window * grad).sum(0), None


class JumpReLUSAE(DictionarySAE):
    """JumpReLU (Rajamanoharan et al. 2024): per-latent thresholds trained with an STE and an L0 penalty."""

    config_schema = JumpReLUConfig

    def __init__(self, d_in: int, d_sae: int, hparams: dict[str, Any] | None = None) -> None:
        super().__init__(d_in, d_sae, hparams)
        init = float(self.setting("init_threshold"))
        self.log_threshold = nn.Parameter(torch.full((d_sae,), float(torch.log(torch.tensor(init)))))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.pre_activations(x))
        return pre * (pre > self.threshold)

    def training_loss(self, x, dead):
        pre = torch.relu(self.pre_activations(x))
        bandwidth = float(self.setting("bandwidth"))
        theta = self.threshold
        codes = _JumpReLUFunction.apply(pre, theta, bandwidth)
        recon = self.batch_fvu(x, self.decode(codes))
        l0 = _StepFunction.apply(pre, theta, bandwidth).sum(dim=1).mean()
        loss = recon + float(self.setting("sparsity_coeff")) * l0
        return loss, {"loss": loss.item(), "fvu": recon.item(), "l0": l0.item()}, (codes > 0).any(dim=0)

    @torch.no_grad()
    def fold_input_scale_(self, scale: float) -> None:
        super().fold_input_scale_(scale)
        self.log_threshold.sub_(float(torch.log(torch.tensor(scale))))


JumpReLURecipe = register(JumpReLUSAE)
