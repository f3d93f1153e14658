"""The three pydantic bases of an SAE architecture's fields; the registry (``_registry``) combines them.

- :class:`ArchitectureConfig`: one architecture's own fields (``k``, ``l1_coeff``, ...), declared once in
  its module with defaults, ranges and a description of a valid value.  Subclasses set the discriminator
  ``architecture: Literal["name"] = "name"``.  Those whose sparsity is a penalty weight (ReLU, JumpReLU)
  derive from :class:`L0TargetConfig` instead, which adds the fields that calibrate it to a target L0.
- :class:`SAERecipeBase`: the fields every training recipe shares (sizes, optimisation, dead latents).
  An architecture's recipe class is ``(its ArchitectureConfig, SAERecipeBase)``: closed (unknown keys are
  refused) and lax about JSON types, as a hand-written recipe file is.
- :class:`CheckpointConfig`: the sizes every ``config.json`` of a native checkpoint states.  An
  architecture's checkpoint schema is ``(its ArchitectureConfig, CheckpointConfig)``: strict types, and
  keys the architecture does not read (training hyperparameters recorded with the weights) are kept.
"""
from __future__ import annotations

from typing import Any, ClassVar, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scopebench.paper import PAPER_K
from scopebench.sae.dictionary import ENCODER_INIT_SCALE
from scopebench.sae.validation import ConfigFloat, ConfigInt


class ArchitectureConfig(BaseModel):
    """The fields one SAE architecture reads from its config; subclass it in the architecture's module."""

    model_config = ConfigDict(allow_inf_nan=False)

    architecture: str
    #: Fields that decide what the SAE computes at inference (TopK's ``k``): a recipe may leave them to
    #: their default, but a checkpoint must state them, so weights are never read under a guessed value.
    checkpoint_requires: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def architecture_name(cls) -> str:
        """The value of the ``architecture`` discriminator (``Literal["topk"]`` -> ``"topk"``)."""
        values = get_args(cls.model_fields["architecture"].annotation)
        if len(values) != 1 or not isinstance(values[0], str):
            raise TypeError(f"{cls.__name__} must declare architecture: Literal['<name>'] = '<name>'")
        return values[0]

    @classmethod
    def own_fields(cls) -> tuple[str, ...]:
        """This architecture's fields beyond the discriminator, in declaration order."""
        return tuple(name for name in cls.model_fields if name != "architecture")

    def check_d_sae(self, d_sae: int) -> None:
        """Checks that need the dictionary size (``k <= d_sae``, ...): raise ``ValueError`` naming the field."""

    @property
    def n_calibration_batches(self) -> int:
        """Batches ``train_sae`` draws after training for ``SAE.calibrate_`` (0: inference needs nothing more)."""
        return 0


class L0TargetConfig(ArchitectureConfig):
    """Shared fields of the architectures whose sparsity is set by a penalty weight (ReLU's ``l1_coeff``,
    JumpReLU's ``sparsity_coeff``), not by a ``k``: ``train_sae`` calibrates that weight so the SAE lands
    at ``target_l0`` active latents per token (see ``scopebench.sae.training.L0Controller``).

    Subclasses name the weight in ``calibrated_coeff``; its configured value is where calibration starts.
    """

    #: the field ``train_sae`` calibrates (a float field of the subclass)
    calibrated_coeff: ClassVar[str] = ""

    target_l0: ConfigFloat | None = Field(
        float(PAPER_K), gt=0, description="a number > 0: calibrate the penalty weight so a token has this many "
        "active latents (default: the paper's k = 30); null keeps the configured weight fixed")
    l0_calibration_fraction: ConfigFloat = Field(
        0.8, gt=0, le=1, description="a number in (0, 1]: the first fraction of training steps during which the "
        "penalty weight is adjusted; it is frozen afterwards (0.8: for the default 20% learning-rate decay)")
    l0_calibration_gain: ConfigFloat = Field(
        0.02, gt=0, le=1, description="a number in (0, 1]: the controller's gain, the change of log(weight) per "
        "step per unit of forecast log-L0 error (a step changes the weight by at most a factor exp(gain))")


class SAERecipeBase(ArchitectureConfig):
    """Everything ``train_sae`` needs besides the tokens and the architecture's own fields."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    d_in: int | None = Field(None, gt=0, description="token dimension; inferred from the tokens when null")
    expansion_factor: int = Field(32, gt=0)
    d_sae: int | None = Field(None, gt=0, description="overrides expansion_factor when set")
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
    encoder_init_scale: float = Field(
        ENCODER_INIT_SCALE, gt=0, description="encoder rows = this x the unit decoder rows at initialisation "
                                              "(1: tied, as Gao et al. 2024); see DictionarySAE.initialise")
    checkpoint_every: int = Field(500, gt=0, description="steps between resumable training-state saves")
    # dead latents (tracked for every architecture; the TopK family also trains them with AuxK)
    dead_after_tokens: int = Field(1_000_000, gt=0, description="a latent is dead after this many tokens without firing")

    @model_validator(mode="after")
    def _check_ranges(self) -> SAERecipeBase:
        if any(not 0 <= beta < 1 for beta in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {list(self.adam_betas)}; "
                             "e.g. [0.9, 0.999]")
        if self.d_sae is not None:
            self.check_d_sae(self.d_sae)
        return self

    def sae_config(self, d_in: int) -> dict[str, Any]:
        """Config for ``build_sae``: this recipe with ``d_in`` and ``d_sae`` resolved."""
        if self.d_in is not None and self.d_in != d_in:
            raise ValueError(f"recipe says d_in={self.d_in} but the tokens have d_in={d_in}")
        data = self.model_dump(mode="json")
        data["d_in"] = d_in
        data["d_sae"] = self.d_sae or d_in * self.expansion_factor
        return data


class CheckpointConfig(ArchitectureConfig):
    """Fields every ``config.json`` states.  Strict: ``"32"``, ``32.0`` or ``true`` are not integers."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    d_in: ConfigInt = Field(gt=0, description="a positive integer: the token dimension of the backbone layer")
    d_sae: ConfigInt | None = Field(None, gt=0, description="a positive integer: the number of latents")
    expansion_factor: ConfigInt | None = Field(None, gt=0, description="a positive integer: d_sae / d_in "
                                               "(used only when d_sae is not set)")

    @model_validator(mode="after")
    def _check_sizes(self) -> CheckpointConfig:
        if self.d_sae is None and self.expansion_factor is None:
            raise ValueError("d_sae: missing; set 'd_sae' (the number of latents) or 'expansion_factor'")
        missing = [name for name in self.checkpoint_requires if name not in self.model_fields_set]
        if missing:
            raise ValueError("; ".join(f"{name}: missing; expected {type(self).model_fields[name].description}"
                                       for name in missing))
        self.check_d_sae(self.resolved_d_sae)
        return self

    @property
    def resolved_d_sae(self) -> int:
        return self.d_sae if self.d_sae is not None else self.d_in * int(self.expansion_factor or 0)
