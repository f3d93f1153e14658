"""Validated SAE training recipes (architecture + hyperparameters), loaded from baselines/."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BASELINES_DIR = Path(__file__).resolve().parents[2] / "baselines"


class SAERecipe(BaseModel):
    """Everything ``train_sae`` needs besides the tokens.  Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["batchtopk", "topk", "relu", "jumprelu", "matryoshka"]
    d_in: int | None = Field(None, gt=0, description="token dimension; inferred from the tokens when null")
    expansion_factor: int = Field(32, gt=0)
    d_sae: int | None = Field(None, gt=0, description="overrides expansion_factor when set")
    k: int = Field(30, gt=0, description="active latents per token (topk, batchtopk, matryoshka)")
    # optimisation
    lr: float = Field(3e-4, gt=0)
    adam_betas: tuple[float, float] = (0.9, 0.999)
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
        raise ValueError(f"invalid SAE {source}:\n{err}") from None


def load_recipe(name_or_path: str | Path) -> SAERecipe:
    """Load ``baselines/<name>.json`` or a JSON file path; errors list the known names/keys."""
    path = Path(name_or_path)
    if not path.suffix:
        path = BASELINES_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in BASELINES_DIR.glob("*.json"))
        raise FileNotFoundError(f"no SAE recipe at {path}; known baselines: {known} (or pass a .json path)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"recipe {path} is not valid JSON: {err}") from None
    return parse_recipe(data, source=f"recipe {path}")
