"""Adapter for open_clip CLIP vision towers (OpenAI weights, QuickGELU configs).

Only the vision tower is built (the text tower is never needed).  The forward pass uses
open_clip's ``forward_intermediates(stop_early=True)``, so later blocks never run.  The
block's ``nn.MultiheadAttention`` is called with ``need_weights=False``; attention
probabilities are recomputed in a forward pre-hook from its input and ``in_proj``:
``softmax(q k^T / sqrt(d_head))``.
"""
from __future__ import annotations

from pathlib import Path

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from scopebench.backbones.adapter_input import check_geometry, check_split_tokens, normalise_pixels, square_grid
from scopebench.backbones.base import Grid, LayerOutput, Preprocess
from scopebench.backbones.spec import BackboneSpec


def create_openclip_visual(spec: BackboneSpec) -> nn.Module:
    """Build the vision tower of ``spec.model_id`` with ``spec``'s geometry, no weights."""
    import open_clip
    from open_clip.model import _build_vision_tower

    cfg = open_clip.get_model_config(spec.model_id)
    if cfg is None:
        raise ValueError(f"open_clip has no architecture {spec.model_id!r}; see open_clip.list_models()")
    if spec.embed_dim % spec.n_heads:
        raise ValueError(f"embed_dim {spec.embed_dim} is not divisible by n_heads {spec.n_heads}")
    if spec.n_prefix != 1:
        raise ValueError(f"open_clip vision towers have exactly one prefix (class) token, not {spec.n_prefix}")
    vision_cfg: dict[str, Any] = copy.deepcopy(cfg["vision_cfg"])
    vision_cfg.update(image_size=spec.image_size, patch_size=spec.patch_size, layers=spec.depth,
                      width=spec.embed_dim, head_width=spec.embed_dim // spec.n_heads)
    return _build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=bool(cfg.get("quick_gelu", False)))


def vision_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision-tower part of a full open_clip CLIP state dict (keys ``visual.*``), or the dict as is."""
    visual = {k.removeprefix("visual."): v for k, v in state_dict.items() if k.startswith("visual.")}
    return visual or dict(state_dict)


def load_openclip_weights(visual: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Assign the vision part of ``state_dict`` to ``visual`` (may live on the meta device), strictly."""
    try:
        result = visual.load_state_dict(vision_state_dict(state_dict), strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"weights do not fit this model ({exc}); is the file for this backbone?") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"weights do not fit the open_clip vision tower: missing {result.missing_keys[:8]}, "
                         f"unexpected {result.unexpected_keys[:8]}; is the file an open_clip checkpoint of this model?")


def openclip_preprocess(spec: BackboneSpec, visual: nn.Module) -> Preprocess:
    """Mean/std/interpolation of the pretrained tag (open_clip resizes the short side: crop_pct 1)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(spec.model_id, spec.pretrained_tag or "") or {}
    mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
    std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
    return Preprocess(image_size=int(visual.image_size[0]), mean=tuple(float(v) for v in mean),
                      std=tuple(float(v) for v in std), interpolation=cfg.get("interpolation", "bicubic"),
                      crop_pct=1.0)


def mha_probabilities(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d))`` per head, ``[B, H, L, L]``, for batch-first self-attention input ``x``."""
    q, k, _ = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    b, length, dim = q.shape
    heads = attn.num_heads
    q = q.reshape(b, length, heads, dim // heads).transpose(1, 2)
    k = k.reshape(b, length, heads, dim // heads).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-2, -1) / (dim // heads) ** 0.5, dim=-1)


def _check_geometry(spec: BackboneSpec, visual: nn.Module) -> None:
    blocks = visual.transformer.resblocks
    found = {"image_size": int(visual.image_size[0]), "patch_size": int(visual.patch_size[0]),
             "depth": len(blocks), "embed_dim": int(visual.transformer.width),
             "n_heads": int(blocks[0].attn.num_heads)}
    check_geometry(spec, found, "open_clip")


class OpenClipBackbone:
    """An open_clip CLIP vision tower cut at ``spec.layer``; satisfies the Backbone protocol."""

    def __init__(self, spec: BackboneSpec, visual: nn.Module, weights_id: str) -> None:
        _check_geometry(spec, visual)
        attn = visual.transformer.resblocks[spec.layer].attn
        if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
            raise TypeError(f"block {spec.layer} of {spec.model_id} does not use a packed nn.MultiheadAttention; "
                            "attention capture supports open_clip's default ResidualAttentionBlock only")
        self.spec = spec
        self.visual = visual.eval()
        self.preprocess = openclip_preprocess(spec, visual)
        self._weights_id = weights_id
        self._device = next(visual.parameters()).device
        self._attn = attn

    @property
    def weights_id(self) -> str:
        return self._weights_id

    @property
    def grid(self) -> Grid:
        return square_grid(self.spec, n_prefix=1)

    def _record_attention(self, captured: list[torch.Tensor]):
        batch_first = self._attn.batch_first

        def hook(module: nn.MultiheadAttention, args: tuple[Any, ...]) -> None:
            x = args[0] if batch_first else args[0].transpose(0, 1)
            captured.append(mha_probabilities(module, x))

        return self._attn.register_forward_pre_hook(hook)

    def forward_layer(self, pixels: torch.Tensor, *, attention: bool = False) -> LayerOutput:
        x = normalise_pixels(pixels, self.preprocess, self._device)
        captured: list[torch.Tensor] = []
        handle = self._record_attention(captured) if attention else None
        try:
            with torch.no_grad():
                out = self.visual.forward_intermediates(
                    x, indices=[self.spec.layer], stop_early=True, intermediates_only=True,
                    output_fmt="NLC", output_extra_tokens=True,
                )
        finally:
            if handle is not None:
                handle.remove()
        return LayerOutput(tokens=out["image_intermediates"][0], prefix=out["image_intermediates_prefix"][0],
                           grid=self.grid, attention=captured[0] if attention else None)

    def propagate(self, tokens: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Run (edited) designated-block tokens through the later blocks and ``ln_post``.

        Returns the final patch tokens ``[B, N, D]`` (the class token dropped after the norm).
        """
        check_split_tokens(tokens, prefix, self.grid.n_patches, 1, self.spec.embed_dim)
        x = torch.cat([prefix, tokens], dim=1).to(self._device, torch.float32)
        transformer = self.visual.transformer
        with torch.no_grad():
            if not transformer.batch_first:
                x = x.transpose(0, 1)
            for block in transformer.resblocks[self.spec.layer + 1:]:
                x = block(x)
            if not transformer.batch_first:
                x = x.transpose(0, 1)
            x = self.visual.ln_post(x)
        return x[:, 1:]


def load_openclip_backbone(spec: BackboneSpec, path: Path | None, seed: int, device: str) -> OpenClipBackbone:
    """The ``open_clip`` source's loader (scopebench.backbones.sources)."""
    from scopebench.backbones.loader import instantiate

    visual, identity = instantiate(spec, path, seed, device, create_openclip_visual, load_openclip_weights)
    return OpenClipBackbone(spec, visual, identity)
