"""Validated SAE training recipes (architecture + hyperparameters), loaded from baselines/."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scopebench.sae.architectures import matryoshka_prefix_sizes
from scopebench.sae.validation import SAEConfigError, describe_validation_error, parse_json_object

BASELINES_DIR = Path(__file__).resolve().parents[2] / "baselines"
#: Architectures whose recipe field ``k`` (active latents per token) is used.
USES_K = ("topk", "batchtopk", "matryoshka")


class RecipeError(SAEConfigError):
    """One or more SAE recipes that cannot be used; the message names each file and its problem."""


class SAERecipe(BaseModel):
    """Everything ``train_sae`` needs besides the tokens.  Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    architecture: Literal["batchtopk", "topk", "relu", "jumprelu", "matryoshka"]
    d_in: int | None = Field(None, gt=0, description="token dimension; inferred from the tokens when null")
    expansion_factor: int = Field(32, gt=0)
    d_sae: int | None = Field(None, gt=0, description="overrides expansion_factor when set")
    k: int = Field(30, gt=0, description="active latents per token (topk, batchtopk, matryoshka)")
    # optimisation
    lr: float = Field(3e-4, gt=0)
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="two numbers in [0, 1), e.g. [0.9, 0.999]")
    batch_size: int = Field(4096, gt=0)
    tokens_per_image: int = Field(4, gt=0, description="patch tokens sampled per image per epoch (paper: 4)")
    epochs: int = Field(1, gt=0)
    n_tokens: int | None = Field(None, gt=0, description="total training tokens; overrides epochs")
    lr_warmup_steps: int = Field(0, ge=0)
    lr_decay_fraction: float = Field(0.2, ge=0, le=1, description="linear decay to 0 over this final fraction")
    normalize_activations: bool = Field(True, description="train on tokens scaled to mean norm sqrt(d_in), folded back after")
    checkpoint_every: int = Field(500, gt=0, description="steps between resumable training-state saves")
    # dead latents / AuxK
    aux_k: int = Field(256, gt=0)
    aux_k_coeff: float = Field(1 / 32, ge=0)
    dead_after_tokens: int = Field(1_000_000, gt=0, description="a latent is dead after this many tokens without firing")
    # architecture-specific
    calibration_batches: int = Field(20, gt=0, description="batches drawn after training to estimate BatchTopK's "
                                     "inference threshold (mean of each batch's smallest kept activation)")
    l1_coeff: float = Field(1.0, ge=0)
    init_threshold: float = Field(0.1, gt=0)
    bandwidth: float = Field(0.05, gt=0)
    sparsity_coeff: float = Field(1e-3, ge=0)
    group_fractions: list[float] = Field(default_factory=lambda: [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0])
    group_weights: list[float] | None = None

    @model_validator(mode="after")
    def _check_groups(self) -> SAERecipe:
        fractions = self.group_fractions
        if not fractions or any(not 0 < f <= 1 for f in fractions) or fractions[-1] != 1.0 or \
                any(b <= a for a, b in zip(fractions, fractions[1:])):
            raise ValueError(f"group_fractions must strictly increase within (0, 1] and end at 1.0 (the whole "
                             f"dictionary), got {fractions}; e.g. [0.0625, 0.125, 0.25, 0.5, 1.0]")
        if self.group_weights is not None and len(self.group_weights) != len(self.group_fractions):
            raise ValueError("group_weights must have one weight per entry of group_fractions")
        if self.group_weights is not None and any(w < 0 for w in self.group_weights):
            raise ValueError(f"group_weights must be >= 0, got {self.group_weights}")
        return self

    @model_validator(mode="after")
    def _check_ranges(self) -> SAERecipe:
        if any(not 0 <= beta < 1 for beta in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {list(self.adam_betas)}; "
                             "e.g. [0.9, 0.999]")
        if self.d_sae is not None:
            if self.architecture in USES_K and self.k > self.d_sae:
                raise ValueError(f"k={self.k} exceeds d_sae={self.d_sae}; k (active latents per token) must be in "
                                 f"[1, d_sae]")
            if self.architecture == "matryoshka":
                matryoshka_prefix_sizes(self.group_fractions, self.d_sae)
        return self

    def sae_config(self, d_in: int) -> dict[str, Any]:
        """Config for ``build_sae``: this recipe with ``d_in`` and ``d_sae`` resolved."""
        if self.d_in is not None and self.d_in != d_in:
            raise ValueError(f"recipe says d_in={self.d_in} but the tokens have d_in={d_in}")
        data = self.model_dump(mode="json")
        data["d_in"] = d_in
        data["d_sae"] = self.d_sae or d_in * self.expansion_factor
        return data


def parse_recipe(data: dict[str, Any], source: str = "recipe") -> SAERecipe:
    try:
        return SAERecipe.model_validate(data)
    except ValidationError as err:
        problems = "\n".join(f"  - {line}" for line in describe_validation_error(err, SAERecipe))
        raise RecipeError(f"invalid SAE {source}:\n{problems}") from None


def recipe_path(name_or_path: str | Path) -> Path:
    """``baselines/<name>.json`` for a bare name, else the path itself."""
    path = Path(name_or_path)
    return BASELINES_DIR / f"{name_or_path}.json" if not path.suffix else path


def load_recipe(name_or_path: str | Path) -> SAERecipe:
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


def load_recipes(names_or_paths: Iterable[str | Path]) -> tuple[list[tuple[str, SAERecipe]], list[tuple[Path, str]]]:
    """Load every recipe: ``(good [(name, recipe)], bad [(file, problem)])``; never stops at the first bad one."""
    good: list[tuple[str, SAERecipe]] = []
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
