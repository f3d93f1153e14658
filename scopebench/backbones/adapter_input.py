"""Checks, input normalisation and the token grid shared by the real adapters (timm, open_clip)."""
from __future__ import annotations

import torch

from scopebench.backbones.base import Grid, Preprocess
from scopebench.backbones.spec import BackboneSpec


def normalise_pixels(pixels: torch.Tensor, preprocess: Preprocess, device: torch.device) -> torch.Tensor:
    """Validate ``[B, 3, S, S]`` pixels in [0, 1] and apply the model's own mean/std."""
    size = preprocess.image_size
    if pixels.ndim != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[-2:]) != (size, size):
        raise ValueError(f"expected pixels of shape [B, 3, {size}, {size}], got {list(pixels.shape)}; "
                         f"resize with scopebench.pipeline.scc.square_resize(images, {size}) first")
    if not pixels.is_floating_point():
        raise ValueError(f"expected float pixels in [0, 1], got dtype {pixels.dtype}; divide uint8 images by 255")
    mean = torch.tensor(preprocess.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=device).view(1, 3, 1, 1)
    return (pixels.to(device=device, dtype=torch.float32) - mean) / std


def square_grid(spec: BackboneSpec, n_prefix: int) -> Grid:
    """The square patch grid of ``spec`` (``image_size // patch_size`` a side) after ``n_prefix`` leading tokens."""
    side = spec.image_size // spec.patch_size
    return Grid(patch_size=spec.patch_size, rows=side, cols=side, n_prefix=n_prefix)


def check_split_tokens(tokens: torch.Tensor, prefix: torch.Tensor, n_patches: int, n_prefix: int, dim: int) -> None:
    """Shape check for ``propagate`` inputs, with a message naming the expected shapes."""
    if tokens.ndim != 3 or tokens.shape[1:] != (n_patches, dim):
        raise ValueError(f"tokens must be [B, {n_patches}, {dim}], got {list(tokens.shape)}")
    if prefix.ndim != 3 or prefix.shape != (tokens.shape[0], n_prefix, dim):
        raise ValueError(f"prefix must be [{tokens.shape[0]}, {n_prefix}, {dim}], got {list(prefix.shape)}")


def check_geometry(spec: BackboneSpec, found: dict[str, int], library: str) -> None:
    """Refuse a model whose geometry differs from its registry entry, or a layer it lacks."""
    wrong = {k: (getattr(spec, k), v) for k, v in found.items() if getattr(spec, k) != v}
    if wrong:
        raise ValueError(f"registry entry {spec.name!r} disagrees with {library}'s {spec.model_id}: "
                         + ", ".join(f"{k} spec={s} model={m}" for k, (s, m) in wrong.items()))
    if not 0 <= spec.layer < found["depth"]:
        raise ValueError(f"designated layer {spec.layer} outside 0..{found['depth'] - 1} for {spec.name!r}; "
                         "when shrinking depth, override 'layer' too")
