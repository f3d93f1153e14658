"""Matryoshka (Bussmann et al. 2025, arXiv 2502.20578): BatchTopK whose nested dictionary prefixes each
reconstruct the input."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from scopebench.sae.arch._registry import register
from scopebench.sae.arch.batchtopk import BatchTopKConfig, BatchTopKSAE
from scopebench.sae.sparse_ops import sparse_decode
from scopebench.sae.validation import ConfigFloat

DEFAULT_GROUP_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


def matryoshka_prefix_sizes(fractions: Iterable[float], d_sae: int) -> list[int]:
    """Prefix sizes of ``group_fractions``; they must strictly increase and end at ``d_sae``."""
    fractions = list(fractions)
    sizes = [max(1, round(f * d_sae)) for f in fractions]
    if not sizes or sizes[-1] != d_sae or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"group_fractions {fractions} give prefix sizes {sizes} for d_sae={d_sae}: they "
                         "must strictly increase and end at d_sae (fraction 1.0); drop fractions that round "
                         "to the same size")
    return sizes


class MatryoshkaConfig(BatchTopKConfig):
    architecture: Literal["matryoshka"] = "matryoshka"  # type: ignore[assignment]
    group_fractions: list[ConfigFloat] = Field(
        default_factory=lambda: list(DEFAULT_GROUP_FRACTIONS),
        description="fractions in (0, 1] that strictly increase to 1.0 (the whole dictionary), "
                    "e.g. [0.0625, 0.125, 0.25, 0.5, 1.0]")
    group_weights: list[ConfigFloat] | None = Field(
        None, description="null (equal weights), or one weight >= 0 per entry of group_fractions")

    @field_validator("group_fractions")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        if not fractions or any(not 0 < f <= 1 for f in fractions) or fractions[-1] != 1.0 or \
                any(b <= a for a, b in zip(fractions, fractions[1:])):
            raise ValueError("must strictly increase and end at 1.0, each in (0, 1]")
        return fractions

    @model_validator(mode="after")
    def _weights(self) -> MatryoshkaConfig:
        weights = self.group_weights
        if weights is not None and (len(weights) != len(self.group_fractions) or any(w < 0 for w in weights)):
            raise ValueError(f"group_weights: {weights} must be null or one weight >= 0 per entry of "
                             f"group_fractions {self.group_fractions}")
        return self

    def check_d_sae(self, d_sae: int) -> None:
        super().check_d_sae(d_sae)
        matryoshka_prefix_sizes(self.group_fractions, d_sae)


class MatryoshkaSAE(BatchTopKSAE):
    """BatchTopK with nested dictionary prefixes (Bussmann et al. 2025, arXiv 2502.20578).

    Latents ``[0, m_i)`` alone must reconstruct the input for every prefix size ``m_i``;
    the loss is the weighted sum of the prefixes' reconstruction losses.
    """

    config_schema = MatryoshkaConfig

    @property
    def prefix_sizes(self) -> list[int]:
        """One prefix size per entry of ``group_fractions``, in that order (so ``group_weights`` line up)."""
        return matryoshka_prefix_sizes(self.setting("group_fractions"), self.d_sae)

    def training_loss(self, x, dead):
        x_c, pre, sel, values = self.sparse_forward(x)
        sizes = self.prefix_sizes
        weights = self.setting("group_weights") or [1.0 / len(sizes)] * len(sizes)
        if len(weights) != len(sizes):
            raise ValueError(f"group_weights has {len(weights)} entries but there are {len(sizes)} prefixes {sizes}")
        recon = x.new_zeros(())
        parts: dict[str, float] = {}
        for size, weight in zip(sizes, weights):
            xhat = sparse_decode(sel, values * (sel.cols < size), self.W_dec) + self.b_dec
            prefix_loss = self.batch_fvu(x, xhat)
            recon = recon + weight * prefix_loss
            parts[f"fvu_{size}"] = prefix_loss.item()
        aux = self.auxk_loss(pre, x_c, x - xhat, dead)
        loss = recon + float(self.setting("aux_k_coeff")) * aux
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x.device)
        fired[sel.cols[values > 0]] = True
        return loss, {"loss": loss.item(), "fvu": parts[f"fvu_{self.d_sae}"], "auxk": aux.item(), **parts}, fired


MatryoshkaRecipe = register(MatryoshkaSAE)
