"""``load_backbone``: registry name -> ready adapter (real weights, random init, or planted)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from scopebench.backbones.base import Backbone
from scopebench.backbones.registry import get_spec
from scopebench.backbones.sources import get_source
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
    source = get_source(spec.source)
    given = weights is not None or bool(weights_map and name in weights_map)
    if not source.takes_weights:
        if given:
            raise ValueError(f"the {spec.source} backbone {name!r} is built from its seed and takes no weight file")
        return source.load(spec, None, seed, device)
    if random_init and given:
        raise ValueError("random_init=True conflicts with weights=/weights_map=; pass one or the other")
    path = None if random_init else resolve_weights(spec, weights=weights, weights_map=weights_map)
    return source.load(spec, path, seed, device)


def instantiate(spec: BackboneSpec, path: Path | None, seed: int, device: str,
                create: Callable[[BackboneSpec], torch.nn.Module],
                load_weights: Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], None]
                ) -> tuple[torch.nn.Module, str]:
    """A source's model, seeded random init (``path`` None) or from a weights file, with its ``weights_id``.

    The shared part of the timm and open_clip sources: a file's tensors are assigned to a
    model built on the meta device (no wasted init), and a file that leaves any tensor unset
    is refused.
    """
    if path is None:
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
            torch.manual_seed(seed)
            model = create(spec)
        identity = f"random-init:{seed}:geometry={spec.geometry_id}"
    else:
        with torch.device("meta"):
            model = create(spec)
        load_weights(model, read_state_dict(path))
        unset = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if unset:
            raise ValueError(f"weights {path} leave {unset[:5]} of {spec.name!r} unset; is the file complete?")
        identity = weights_id(path)
    return model.to(device=device, dtype=torch.float32).eval().requires_grad_(False), identity
