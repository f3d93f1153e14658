"""``scopebench recipes``: the baseline SAE recipes (architecture and training hyperparameters).

``scopebench.sae`` imports torch: it is imported when the command runs, not when the parser is built.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tabulate import tabulate

if TYPE_CHECKING:
    from scopebench.sae.arch import SAERecipeBase

_HEADERS = ["name", "architecture", "expansion", "lr", "batch", "tokens", "architecture fields"]
_FIELDS_WIDTH = 44  # the architecture-fields column wraps between fields beyond this


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(item) for item in value) + "]"
    return "null" if value is None else str(value)


def architecture_fields(recipe: SAERecipeBase) -> str:
    """``k=30 aux_k=512 ...``: the recipe's values of its architecture's own fields (from the registry)."""
    from scopebench.sae.arch import ARCHITECTURES

    return " ".join(f"{name}={_value(getattr(recipe, name))}" for name in ARCHITECTURES[recipe.architecture].fields)


def recipe_row(name: str, recipe: SAERecipeBase) -> list[str]:
    expansion = f"d_sae={recipe.d_sae}" if recipe.d_sae is not None else f"x{recipe.expansion_factor}"
    if recipe.n_tokens is not None:
        tokens = f"{recipe.n_tokens:,}"
    else:
        epochs = "epoch" if recipe.epochs == 1 else "epochs"
        tokens = f"{recipe.epochs} {epochs} x {recipe.tokens_per_image}/image"
    return [name, recipe.architecture, expansion, f"{recipe.lr:g}", str(recipe.batch_size), tokens,
            architecture_fields(recipe) or "–"]


def load_recipes(folder: Path) -> tuple[list[tuple[str, SAERecipeBase]], list[tuple[Path, str]]]:
    """Every ``*.json`` recipe of ``folder``: ``(good [(name, recipe)], bad [(file, problem)])``."""
    from scopebench.sae.recipe import load_recipes as load_each

    return load_each(sorted(folder.glob("*.json")))


def _run(args: argparse.Namespace) -> int:
    from scopebench.sae.recipe import BASELINES_DIR

    folder: Path = args.baselines_dir if args.baselines_dir is not None else BASELINES_DIR
    if not folder.is_dir():
        print(f"error: no baselines folder at {folder}; pass --baselines-dir PATH", file=sys.stderr)
        return 2
    recipes, bad = load_recipes(folder)
    if not recipes and not bad:
        print(f"no recipes (*.json) in {folder}")
        return 0
    if recipes:
        from scopebench.sae.arch import ARCHITECTURES

        widths = [None] * (len(_HEADERS) - 1) + [_FIELDS_WIDTH]
        print(tabulate([recipe_row(name, recipe) for name, recipe in recipes], headers=_HEADERS,
                       disable_numparse=True, maxcolwidths=widths))
        print(f"\nexpansion: latents per token dimension; tokens: training budget; architecture fields: the "
              f"architecture's own hyperparameters, defaults filled in (k: active latents per token), declared in "
              f"scopebench/sae/arch/<architecture>.py.\narchitectures: {', '.join(sorted(ARCHITECTURES))}; "
              f"recipes in {folder}; the bench trains those named by `pytest bench --sae-recipes topk,relu`.")
    for _, problem in bad:
        print(f"error: {problem}", file=sys.stderr)
    if bad:
        print(f"{len(bad)} invalid recipe(s) in {folder}: {', '.join(path.name for path, _ in bad)}; the bench "
              "refuses to start while a recipe it names is invalid", file=sys.stderr)
        return 2
    return 0


def register_recipes(subparsers: argparse._SubParsersAction) -> None:
    """``scopebench recipes [--baselines-dir DIR]``."""
    parser = subparsers.add_parser(
        "recipes", help="list the baseline SAE recipes: architecture, expansion, lr, batch, tokens and the "
             "architecture's own fields (k, l1_coeff, ...)",
        description="List the baseline SAE training recipes (one JSON file each); invalid ones are named with "
                    "their problem on stderr. Exit 2 if any recipe is invalid.")
    parser.add_argument("--baselines-dir", type=Path, default=None,
                        help="folder of recipe JSON files (default: baselines/ of the scopebench checkout)")
    parser.set_defaults(handler=_run)
