"""The SAE architecture registry: one module per architecture, registered by name.

Each module (``topk.py``, ...) holds the architecture's fields (an ``ArchitectureConfig`` with the
discriminator ``architecture: Literal["name"]``, defaults, ranges and cross-field checks), its SAE class
(inference, training loss, post-training calibration) and ``register(TheSAE)``, which derives from those
fields the architecture's recipe class (a member of ``scopebench.sae.recipe.SAERecipe``) and the schema of
its checkpoints' ``config.json``.

To add an architecture: write ``<name>.py`` like the ones here and add it to the import below.
"""
from __future__ import annotations

from scopebench.sae.arch._base import ArchitectureConfig, CheckpointConfig, SAERecipeBase
from scopebench.sae.arch._registry import (
    ARCHITECTURES,
    Architecture,
    build_sae,
    recipe_union,
    register,
    validate_sae_config,
)

# The architectures, stated once: importing a module registers it (in this order).
from scopebench.sae.arch import topk, batchtopk, matryoshka, relu, jumprelu  # noqa: E402, F401, I001  isort: skip

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ArchitectureConfig",
    "CheckpointConfig",
    "SAERecipeBase",
    "build_sae",
    "recipe_union",
    "register",
    "validate_sae_config",
]
