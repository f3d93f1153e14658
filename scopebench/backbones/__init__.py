"""Backbones: the registry, the adapter contract, and ``load_backbone``."""
from __future__ import annotations

from scopebench.backbones.base import Backbone, Grid, LayerOutput, Preprocess
from scopebench.backbones.loader import load_backbone
from scopebench.backbones.registry import REAL_BACKBONES, REGISTRY, get_spec, register_backbone
from scopebench.backbones.sources import BackboneSource, get_source, register_source
from scopebench.backbones.weights import WeightsNotFound

__all__ = [
    "Backbone",
    "BackboneSource",
    "Grid",
    "LayerOutput",
    "Preprocess",
    "REAL_BACKBONES",
    "REGISTRY",
    "WeightsNotFound",
    "get_source",
    "get_spec",
    "load_backbone",
    "register_backbone",
    "register_source",
]
