"""Validated SAE training recipes (architecture + hyperparameters), loaded from baselines/.

A recipe is an instance of its architecture's recipe class (``scopebench.sae.arch.<name>``): the shared
training fields of :class:`SAERecipeBase` plus that architecture's own fields, and no others.
:data:`SAERecipe` is their discriminated union (on ``architecture``) for use in other pydantic models.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scopebench.sae.arch import ARCHITECTURES, SAERecipeBase, recipe_union
from scopebench.sae.validation import SAEConfigError, describe_validation_error, json_type, parse_json_object


def baselines_dir() -> Path:
    """The folder of the shipped baseline recipes: package data ``scopebench.baselines``.

    The top-level ``baselines/`` folder is mapped into the package (``[tool.setuptools.package-dir]``),
    so a wheel holds it as ``scopebench/baselines/`` and an editable install maps it to the checkout;
    both are found with importlib.resources, never by walking up from this file.
    """
    from importlib import resources

    folder = resources.files("scopebench.baselines")
    if not isinstance(folder, Path):  # e.g. a zipped install: recipes must be plain files to be listed
        raise RuntimeError(f"scopebench's baseline recipes are not a folder on disk ({folder!r}); install "
                           "scopebench as an unpacked wheel")
    return folder


BASELINES_DIR = baselines_dir()
#: Any registered architecture's recipe: ``Annotated[Union[TopKRecipe, ...], Field(discriminator="architecture")]``.
SAERecipe = recipe_union()


class RecipeError(SAEConfigError):
    """One or more SAE recipes that cannot be used; the message names each file and its problem."""


def _owners(field: str, architecture: str) -> list[str]:
    return [name for name, entry in ARCHITECTURES.items() if name != architecture and field in entry.fields]


def parse_recipe(data: Mapping[str, Any], source: str = "recipe") -> SAERecipeBase:
    """The recipe ``data`` describes, as its architecture's recipe class; :class:`RecipeError` lists each problem."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"invalid SAE {source}: a recipe is a JSON object, got a {json_type(data)}")
    name = data.get("architecture")
    entry = ARCHITECTURES.get(name) if isinstance(name, str) else None
    if entry is None:
        problem = "missing" if "architecture" not in data else f"unknown SAE architecture {name!r}"
        raise RecipeError(f"invalid SAE {source}:\n  - architecture: {problem}; expected one of "
                          f"{sorted(ARCHITECTURES)}")
    try:
        return entry.recipe.model_validate(data)
    except ValidationError as err:
        lines = describe_validation_error(err, entry.recipe)
        for i, problem in enumerate(err.errors(include_url=False)):
            field = str(problem["loc"][0]) if problem["type"] == "extra_forbidden" else ""
            owners = _owners(field, entry.name) if field else []
            if owners:  # a field of another architecture: say whose, not which fields are close in spelling
                lines[i] = (f"{field}: unknown field for a {entry.name} recipe (got {problem['input']!r}); it is a "
                            f"field of {', '.join(owners)} recipes")
        problems = "\n".join(f"  - {line}" for line in lines)
        raise RecipeError(f"invalid SAE {source}:\n{problems}") from None


def recipe_path(name_or_path: str | Path) -> Path:
    """``baselines/<name>.json`` for a bare name, else the path itself."""
    path = Path(name_or_path)
    return BASELINES_DIR / f"{name_or_path}.json" if not path.suffix else path


def load_recipe(name_or_path: str | Path) -> SAERecipeBase:
    """Load ``baselines/<name>.json`` or a JSON file path; errors list the known names/keys."""
    path = recipe_path(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in BASELINES_DIR.glob("*.json"))
        raise FileNotFoundError(f"no SAE recipe at {path}; known baselines: {known} (or pass a .json path)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"recipe {path} cannot be read as UTF-8 text ({err}); a recipe is a JSON file") from None
    try:
        data = parse_json_object(text, f"recipe {path}", "SAE recipe")
    except SAEConfigError as err:
        raise RecipeError(str(err)) from None
    return parse_recipe(data, source=f"recipe {path}")


def load_recipes(names_or_paths: Iterable[str | Path]) -> tuple[list[tuple[str, SAERecipeBase]], list[tuple[Path, str]]]:
    """Load every recipe: ``(good [(name, recipe)], bad [(file, problem)])``; never stops at the first bad one."""
    good: list[tuple[str, SAERecipeBase]] = []
    bad: list[tuple[Path, str]] = []
    for name in names_or_paths:
        try:
            good.append((recipe_path(name).stem, load_recipe(name)))
        except (ValueError, FileNotFoundError) as err:
            bad.append((recipe_path(name), str(err)))
    return good, bad


def check_recipes(names: Iterable[str | Path]) -> None:
    """Validate every named recipe at once (meant for startup); one :class:`RecipeError` names each bad file."""
    names = list(names)
    _, bad = load_recipes(names)
    if bad:
        listed = "\n".join(f"- {problem}" for _, problem in bad)
        files = ", ".join(str(path) for path, _ in bad)
        raise RecipeError(f"{len(bad)} of {len(names)} SAE recipes are invalid ({files}); fix them or leave them "
                          f"out:\n{listed}")
