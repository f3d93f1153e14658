"""Adapter for timm vision transformers (DINOv2, DeiT3, SigLIP2).

The forward pass goes through timm's own ``forward_intermediates(stop_early=True)`` so
blocks after the designated one never run.  Attention probabilities are read inside the
designated block: its fused (SDPA) path is switched off, so timm computes
``softmax(q k^T * scale)`` explicitly and passes it through ``attn_drop`` (identity in
eval mode), where a forward hook records it.
"""
from __future__ import annotations

from pathlib import Path

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from scopebench.backbones.adapter_input import check_geometry, check_split_tokens, normalise_pixels, square_grid
from scopebench.backbones.base import Grid, LayerOutput, Preprocess
from scopebench.backbones.spec import BackboneSpec


def create_timm_model(spec: BackboneSpec) -> nn.Module:
    """Build ``spec.model_id`` with the geometry ``spec`` states (shrunken specs give tiny models), no weights."""
    import timm

    kwargs: dict[str, Any] = {
        "img_size": spec.image_size,
        "patch_size": spec.patch_size,
        "depth": spec.depth,
        "embed_dim": spec.embed_dim,
        "num_heads": spec.n_heads,
        "reg_tokens": spec.n_prefix - int(spec.has_cls),
    }
    name = f"{spec.model_id}.{spec.pretrained_tag}" if spec.pretrained_tag else spec.model_id
    return timm.create_model(name, pretrained=False, **kwargs)


def load_timm_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Assign a timm-format state dict to ``model`` (may live on the meta device), after timm's own
    checkpoint filter (format fixes, pos-embed resize); every parameter must be covered."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        filtered = checkpoint_filter_fn(dict(state_dict), model)
        result = model.load_state_dict(filtered, strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"weights do not fit this model ({exc}); is the file for this backbone?") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"weights do not fit {type(model).__name__}: missing {result.missing_keys[:8]}, "
                         f"unexpected {result.unexpected_keys[:8]}; is the file for this backbone?")


def timm_preprocess(model: nn.Module) -> Preprocess:
    """Mean/std/interpolation/crop from the model's pretrained config; size from the built model."""
    cfg = model.pretrained_cfg
    size = model.patch_embed.img_size
    return Preprocess(
        image_size=int(size[0]),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"),
        crop_pct=float(cfg.get("crop_pct", 1.0)),
    )


def _check_geometry(spec: BackboneSpec, model: nn.Module) -> None:
    found = {
        "image_size": int(model.patch_embed.img_size[0]),
        "patch_size": int(model.patch_embed.patch_size[0]),
        "n_prefix": int(model.num_prefix_tokens),
        "depth": len(model.blocks),
        "embed_dim": int(model.embed_dim),
        "n_heads": int(model.blocks[0].attn.num_heads),
    }
    check_geometry(spec, found, "timm")


class TimmBackbone:
    """A timm ViT cut at ``spec.layer``; satisfies :class:`scopebench.backbones.base.Backbone`."""

    def __init__(self, spec: BackboneSpec, model: nn.Module, weights_id: str) -> None:
        _check_geometry(spec, model)
        self.spec = spec
        self.model = model.eval()
        self.preprocess = timm_preprocess(model)
        self._weights_id = weights_id
        self._device = next(model.parameters()).device
        attn = model.blocks[spec.layer].attn
        if not (hasattr(attn, "fused_attn") and isinstance(getattr(attn, "attn_drop", None), nn.Dropout)):
            raise TypeError(f"{type(attn).__name__} in {spec.model_id} has no explicit-softmax path; "
                            "attention capture supports timm's Attention class only")
        attn.fused_attn = False  # explicit softmax, so attn_drop sees the probabilities
        self._probe = attn.attn_drop

    @property
    def weights_id(self) -> str:
        return self._weights_id

    @property
    def grid(self) -> Grid:
        return square_grid(self.spec, n_prefix=self.spec.n_prefix)

    def forward_layer(self, pixels: torch.Tensor, *, attention: bool = False) -> LayerOutput:
        x = normalise_pixels(pixels, self.preprocess, self._device)
        captured: list[torch.Tensor] = []
        handle = self._probe.register_forward_hook(lambda _m, _i, out: captured.append(out)) if attention else None
        try:
            with torch.no_grad():
                out = self.model.forward_intermediates(
                    x, indices=[self.spec.layer], stop_early=True, intermediates_only=True,
                    output_fmt="NLC", output_dict=True, return_prefix_tokens=True,
                )
        finally:
            if handle is not None:
                handle.remove()
        tokens = out["image_intermediates"][0]
        prefix_list = out.get("image_intermediates_prefix")
        prefix = prefix_list[0] if prefix_list else tokens.new_zeros(tokens.shape[0], 0, tokens.shape[2])
        return LayerOutput(tokens=tokens, prefix=prefix, grid=self.grid,
                           attention=captured[0] if attention else None)

    def propagate(self, tokens: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Run (edited) designated-block tokens through the later blocks and the final norm.

        Returns the final patch tokens ``[B, N, D]`` (prefix tokens dropped after the norm).
        """
        check_split_tokens(tokens, prefix, self.grid.n_patches, self.spec.n_prefix, self.spec.embed_dim)
        x = torch.cat([prefix, tokens], dim=1).to(self._device, torch.float32)
        with torch.no_grad():
            for block in self.model.blocks[self.spec.layer + 1:]:
                x = block(x)
            x = self.model.norm(x)
        return x[:, self.spec.n_prefix:]


def load_timm_backbone(spec: BackboneSpec, path: Path | None, seed: int, device: str) -> TimmBackbone:
    """The ``timm`` source's loader (scopebench.backbones.sources)."""
    from scopebench.backbones.loader import instantiate

    model, identity = instantiate(spec, path, seed, device, create_timm_model, load_timm_weights)
    return TimmBackbone(spec, model, identity)
