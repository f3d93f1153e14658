"""The contract every backbone adapter satisfies (timm, open_clip, planted).

Downstream code (extraction, SCC analyses, probes) talks only to this interface, so
real backbones and the planted instrument run through exactly the same code.

Conventions
- Input pixels are float tensors ``[B, 3, H, W]`` in ``[0, 1]`` (not normalised), with
  ``H == W == spec.image_size``.  The adapter applies its own mean/std.
- Patch tokens are returned row-major over the patch grid: token ``r * cols + c`` is
  the patch whose top-left pixel is ``(r * patch_size, c * patch_size)``.
- Tokens are the output of the designated block (0-based ``spec.layer``), before any
  final norm; prefix tokens (CLS, registers) are split off into ``prefix``.
- Attention probabilities are those computed *inside* the designated block, over all
  ``n_prefix + n_patches`` tokens (prefix first), shape ``[B, H, N_all, N_all]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from scopebench.backbones.spec import BackboneSpec


@dataclass(frozen=True)
class Grid:
    """Patch-grid geometry of one forward pass."""

    patch_size: int
    rows: int
    cols: int
    n_prefix: int

    @property
    def n_patches(self) -> int:
        return self.rows * self.cols


@dataclass
class LayerOutput:
    tokens: torch.Tensor  # [B, N, D] patch tokens at the designated block
    prefix: torch.Tensor  # [B, P, D] prefix tokens (P may be 0)
    grid: Grid
    attention: torch.Tensor | None = None  # [B, H, P+N, P+N] probabilities, if asked


@dataclass(frozen=True)
class Preprocess:
    """Everything needed to turn an image into model input, from the model's own config."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"  # torchvision InterpolationMode name: bilinear | bicubic | nearest
    crop_pct: float = 1.0


@runtime_checkable
class Backbone(Protocol):
    spec: BackboneSpec
    preprocess: Preprocess

    @property
    def weights_id(self) -> str:
        """Identity of the loaded weights (file hash, HF revision, or 'random-init:<seed>:geometry=<hash>')."""

    def forward_layer(self, pixels: torch.Tensor, *, attention: bool = False) -> LayerOutput:
        """Run up to and including the designated block and no further."""
