"""Sparse autoencoders: protocol, architectures, training, checkpoints and external formats."""
from __future__ import annotations

from scopebench.sae.architectures import (
    ARCHITECTURES,
    BatchTopKSAE,
    JumpReLUSAE,
    MatryoshkaSAE,
    ReLUSAE,
    TopKSAE,
    build_sae,
)
from scopebench.sae.base import SparseAutoencoder
from scopebench.sae.checkpoint import load_native, save_sae
from scopebench.sae.foreign import ForeignSAE
from scopebench.sae.loading import load_sae
from scopebench.sae.recipe import RecipeError, SAERecipe, check_recipes, load_recipe
from scopebench.sae.training import TrainResult, train_sae
from scopebench.sae.validation import SAEConfigError

__all__ = [
    "ARCHITECTURES",
    "BatchTopKSAE",
    "ForeignSAE",
    "JumpReLUSAE",
    "MatryoshkaSAE",
    "ReLUSAE",
    "RecipeError",
    "SAEConfigError",
    "SAERecipe",
    "SparseAutoencoder",
    "TopKSAE",
    "TrainResult",
    "build_sae",
    "check_recipes",
    "load_native",
    "load_recipe",
    "load_sae",
    "save_sae",
    "train_sae",
]
