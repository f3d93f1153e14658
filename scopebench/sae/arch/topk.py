"""TopK (Gao et al. 2024): per-token top-``k`` of the ReLU pre-activations, with the AuxK dead-latent loss."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from scopebench.sae.arch._base import ArchitectureConfig
from scopebench.sae.arch._registry import register
from scopebench.sae.dictionary import _EPS, DictionarySAE
from scopebench.sae.sparse_ops import Selection, gathered_pre_activations, sparse_decode
from scopebench.sae.validation import ConfigFloat, ConfigInt


class TopKConfig(ArchitectureConfig):
    architecture: Literal["topk"] = "topk"
    k: ConfigInt = Field(30, ge=1, description="an integer in [1, d_sae]: the active latents per token")
    aux_k: ConfigInt = Field(256, ge=1, description="a positive integer: dead latents used by the AuxK loss")
    aux_k_coeff: ConfigFloat = Field(1 / 32, ge=0, description="a finite number >= 0: the AuxK loss weight")

    checkpoint_requires: ClassVar[tuple[str, ...]] = ("k",)

    def check_d_sae(self, d_sae: int) -> None:
        if self.k > d_sae:
            raise ValueError(f"k: {self.k} exceeds d_sae={d_sae}; expected an integer in [1, {d_sae}]: the active "
                             "latents per token")


class TopKSAE(DictionarySAE):
    """Per-token top-``k`` of the ReLU pre-activations (Gao et al. 2024), with AuxK."""

    config_schema = TopKConfig

    @property
    def k(self) -> int:
        return int(self.setting("k"))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        top = pre.topk(min(self.k, self.d_sae), dim=1)
        return torch.zeros_like(pre).scatter_(1, top.indices, torch.relu(top.values))

    def _select(self, pre: torch.Tensor) -> Selection:
        return Selection.from_row_topk(pre.topk(min(self.k, self.d_sae), dim=1).indices)

    def sparse_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Selection, torch.Tensor]:
        """``(x_c, dense pre (no grad), selection, selected code values)`` for a training batch."""
        x_c = x - self.b_dec
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, x_c, self.W_enc.T)
        sel = self._select(pre)
        values = torch.relu(gathered_pre_activations(x_c, self.W_enc, self.b_enc, pre, sel))
        return x_c, pre, sel, values

    def training_loss(self, x, dead):
        x_c, pre, sel, values = self.sparse_forward(x)
        xhat = sparse_decode(sel, values, self.W_dec) + self.b_dec
        recon = self.batch_fvu(x, xhat)
        aux = self.auxk_loss(pre, x_c, x - xhat, dead)
        loss = recon + float(self.setting("aux_k_coeff")) * aux
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[sel.cols[values > 0]] = True
        return loss, {"loss": loss.item(), "fvu": recon.item(), "auxk": aux.item()}, fired

    def auxk_loss(self, pre: torch.Tensor, x_c: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
        """AuxK (Gao et al. 2024): dead latents' top-``aux_k`` reconstruct the residual.

        Normalised by the residual's centred energy so the coefficient is scale-free.
        Returns 0 when no latent is dead.
        """
        n_dead = int(dead.sum())
        if n_dead == 0:
            return pre.new_zeros(())
        k_aux = min(int(self.setting("aux_k")), n_dead)
        masked = pre.detach().masked_fill(~dead, float("-inf"))
        sel = Selection.from_row_topk(masked.topk(k_aux, dim=1).indices)
        values = torch.relu(gathered_pre_activations(x_c, self.W_enc, self.b_enc, pre, sel))
        aux_recon = sparse_decode(sel, values, self.W_dec)
        residual = residual.detach()
        denom = (residual - residual.mean(0)).pow(2).sum().clamp_min(_EPS)
        return (aux_recon - residual).pow(2).sum() / denom


TopKRecipe = register(TopKSAE)
