"""ReLU SAE: ReLU codes with an L1 penalty (the classic dictionary-learning SAE)."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from scopebench.sae.arch._base import L0TargetConfig
from scopebench.sae.arch._registry import register
from scopebench.sae.dictionary import _EPS, DictionarySAE
from scopebench.sae.validation import ConfigFloat


class ReLUConfig(L0TargetConfig):
    architecture: Literal["relu"] = "relu"
    l1_coeff: ConfigFloat = Field(1.0, ge=0, description="a finite number >= 0: the L1 penalty weight (with "
                                  "target_l0 set: its starting value, calibrated during training)")

    calibrated_coeff: ClassVar[str] = "l1_coeff"


class ReLUSAE(DictionarySAE):
    """ReLU codes with an L1 penalty (decoder rows are unit-norm, so no norm weighting)."""

    config_schema = ReLUConfig

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activations(x))

    def training_loss(self, x, dead):
        codes = self.encode(x)
        xhat = self.decode(codes)
        recon = self.batch_fvu(x, xhat)
        scale = (x - x.mean(0)).norm(dim=1).mean().clamp_min(_EPS)
        l1 = codes.sum(dim=1).mean() / scale
        loss = recon + float(self.setting("l1_coeff")) * l1
        active = codes > 0
        l0 = active.sum(dim=1).to(x.dtype).mean()
        return loss, {"loss": loss.item(), "fvu": recon.item(), "l1": l1.item(), "l0": l0.item()}, active.any(dim=0)


ReLURecipe = register(ReLUSAE)
