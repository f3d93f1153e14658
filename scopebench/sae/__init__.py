"""Sparse autoencoders: protocol, architectures, training, checkpoints and external formats."""
from __future__ import annotations

from scopebench.sae.arch import ARCHITECTURES, SAERecipeBase, build_sae
from scopebench.sae.arch.batchtopk import BatchTopKSAE
from scopebench.sae.arch.jumprelu import JumpReLUSAE
from scopebench.sae.arch.matryoshka import MatryoshkaSAE
from scopebench.sae.arch.relu import ReLUSAE
from scopebench.sae.arch.topk import TopKSAE
from scopebench.sae.base import SparseAutoencoder
from scopebench.sae.checkpoint import load_native, save_sae
from scopebench.sae.linear import ForeignSAE
from scopebench.sae.loading import load_sae
from scopebench.sae.recipe import RecipeError, SAERecipe, check_recipes, load_recipe, parse_recipe
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
    "SAERecipeBase",
    "SparseAutoencoder",
    "TopKSAE",
    "TrainResult",
    "build_sae",
    "check_recipes",
    "load_native",
    "load_recipe",
    "load_sae",
    "parse_recipe",
    "save_sae",
    "train_sae",
]
