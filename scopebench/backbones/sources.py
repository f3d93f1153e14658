"""Where backbones come from: one entry per source (timm, open_clip, planted, or a user's own).

A source says how to build a model for a registry spec (random init or from a weights file),
which files of the spec's Hugging Face repo hold weights, whether it takes weights at all
(the planted instrument is built from its seed) and whether its bench stages use the
synthetic scenes instead of real datasets. Every ``spec.source`` branch of the package reads
these fields, so adding a source is one :func:`register_source` call::

    register_source(BackboneSource("my-lib", load=my_loader, weight_files=lambda spec: ("model.pt",)))
    register_backbone(BackboneSpec(name="my-vit", family="my-vit", source="my-lib", ...))

Builders import their library when first called, so listing sources and specs never imports torch.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from scopebench.backbones.base import Backbone
    from scopebench.backbones.spec import BackboneSpec

#: (spec, weights file or None for random init, seed, device) -> adapter
Loader = Callable[["BackboneSpec", "Path | None", int, str], "Backbone"]


@dataclass(frozen=True)
class BackboneSource:
    name: str
    load: Loader
    weight_files: Callable[["BackboneSpec"], tuple[str, ...]] = lambda spec: (spec.weights_filename,)
    takes_weights: bool = True  # False: built from its seed (a weights file is refused)
    synthetic_scenes: bool = False  # True: its bench stages read the seeded synthetic scenes


SOURCES: dict[str, BackboneSource] = {}


def register_source(source: BackboneSource) -> BackboneSource:
    if source.name in SOURCES:
        raise ValueError(f"backbone source {source.name!r} is already registered")
    SOURCES[source.name] = source
    return source


def get_source(name: str) -> BackboneSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown backbone source {name!r}; known: {', '.join(SOURCES)} "
                       "(add one with scopebench.backbones.sources.register_source)") from None


def _from(module: str, function: str) -> Callable[..., Any]:
    """``module.function``, imported on first call."""
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), function)(*args, **kwargs)
    return call


register_source(BackboneSource(
    "timm", load=_from("scopebench.backbones.timm_adapter", "load_timm_backbone"),
    weight_files=lambda spec: (spec.weights_filename, "pytorch_model.bin")
    if spec.weights_filename == "model.safetensors" else (spec.weights_filename,)))
register_source(BackboneSource(
    "open_clip", load=_from("scopebench.backbones.openclip_adapter", "load_openclip_backbone"),
    weight_files=lambda spec: ("open_clip_model.safetensors", spec.weights_filename)
    if spec.weights_filename == "open_clip_pytorch_model.bin" else (spec.weights_filename,)))
register_source(BackboneSource(
    "planted", load=_from("scopebench.backbones.planted", "load_planted_backbone"), takes_weights=False,
    synthetic_scenes=True))
