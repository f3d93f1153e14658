"""``load_backbone``: registry name -> ready adapter (real weights, random init, or planted)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from scopebench.backbones.base import Backbone
from scopebench.backbones.registry import get_spec
from scopebench.backbones.spec import BackboneSpec
from scopebench.backbones.weights import read_state_dict, resolve_weights, weights_id

# Spec fields a test may shrink; everything else (family, source, model id, tau...) stays fixed.
OVERRIDABLE = ("image_size", "patch_size", "depth", "embed_dim", "n_heads", "n_prefix", "layer")


def apply_overrides(spec: BackboneSpec, overrides: Mapping[str, Any] | None) -> BackboneSpec:
    """``spec`` with geometry fields replaced (to build tiny models that run the same code path)."""
    if not overrides:
        return spec
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(f"cannot override {unknown} of backbone {spec.name!r}; overridable fields: {OVERRIDABLE}")
    return BackboneSpec.model_validate({**spec.model_dump(), **dict(overrides)})


def load_backbone(
    name: str,
    *,
    weights: str | Path | None = None,
    weights_map: Mapping[str, Path] | None = None,
    device: str = "cpu",
    random_init: bool = False,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Backbone:
    """The adapter for registry entry ``name``.

    Weights resolve offline (see :mod:`scopebench.backbones.weights`); when none are
    found this raises :class:`~scopebench.backbones.weights.WeightsNotFound` saying how to
    provide them.  ``random_init=True`` skips weights (``weights_id`` is
    ``"random-init:<seed>:geometry=<hash>"``); ``overrides`` shrink the geometry for tests.
    """
    spec = apply_overrides(get_spec(name), overrides)
    if spec.source == "planted":
        from scopebench.backbones.planted import PlantedBackbone

        if weights is not None or (weights_map and name in weights_map):
            raise ValueError("the planted backbone is built from its seed and takes no weight file")
        return PlantedBackbone(spec, seed=seed)
    if random_init and (weights is not None or (weights_map and name in weights_map)):
        raise ValueError("random_init=True conflicts with weights=/weights_map=; pass one or the other")

    path = None if random_init else resolve_weights(spec, weights=weights, weights_map=weights_map)
    if path is None:
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
            torch.manual_seed(seed)
            model = _create(spec)
        identity = f"random-init:{seed}:geometry={spec.geometry_id}"
    else:
        with torch.device("meta"):  # no wasted random init: the file's tensors are assigned in place
            model = _create(spec)
        _load_weights(spec, model, read_state_dict(path))
        unset = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if unset:
            raise ValueError(f"weights {path} leave {unset[:5]} of {spec.name!r} unset; is the file complete?")
        identity = weights_id(path)
    model = model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    if spec.source == "timm":
        from scopebench.backbones.timm_adapter import TimmBackbone

        return TimmBackbone(spec, model, identity)
    from scopebench.backbones.openclip_adapter import OpenClipBackbone

    return OpenClipBackbone(spec, model, identity)


def _create(spec: BackboneSpec) -> torch.nn.Module:
    if spec.source == "timm":
        from scopebench.backbones.timm_adapter import create_timm_model

        return create_timm_model(spec)
    from scopebench.backbones.openclip_adapter import create_openclip_visual

    return create_openclip_visual(spec)


def _load_weights(spec: BackboneSpec, model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    if spec.source == "timm":
        from scopebench.backbones.timm_adapter import load_timm_weights

        load_timm_weights(model, state_dict)
    else:
        from scopebench.backbones.openclip_adapter import load_openclip_weights

        load_openclip_weights(model, state_dict)
