"""The architecture registry: name -> (SAE class, its config fields, recipe class, checkpoint schema)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, create_model

from scopebench.sae.arch._base import ArchitectureConfig, CheckpointConfig, SAERecipeBase
from scopebench.sae.dictionary import DictionarySAE
from scopebench.sae.validation import SAEConfigError, validate_model


@dataclass(frozen=True)
class Architecture:
    """One registered SAE architecture; every class here derives from ``config``, its one home of fields."""

    name: str
    sae: type[DictionarySAE]
    #: the architecture's own fields (``sae.config_schema``)
    config: type[ArchitectureConfig]
    #: a training recipe: ``config`` + the shared :class:`SAERecipeBase` fields (a member of ``SAERecipe``)
    recipe: type[SAERecipeBase]
    #: a native checkpoint's ``config.json``: ``config`` + the sizes, strict, unread keys kept
    checkpoint_schema: type[CheckpointConfig]

    @property
    def fields(self) -> tuple[str, ...]:
        """The architecture's own fields (beyond the shared recipe fields), in declaration order."""
        return self.config.own_fields()


#: Every known architecture by name, in registration order (the modules imported by ``scopebench.sae.arch``).
ARCHITECTURES: dict[str, Architecture] = {}


def _derived(config: type[ArchitectureConfig], base: type[BaseModel], suffix: str, doc: str) -> Any:
    """``class <Stem><suffix>(config, base)``: the architecture's fields first in the MRO, so its
    ``architecture: Literal[...]`` is the discriminator, and ``base``'s model_config (closed / strict) applies."""
    stem = config.__name__.removesuffix("Config")
    model = create_model(f"{stem}{suffix}", __base__=(config, base), __module__=config.__module__)
    model.__doc__ = doc
    return model


def register(sae: type[DictionarySAE]) -> type[SAERecipeBase]:
    """Register ``sae`` under its ``config_schema``'s name; returns the architecture's recipe class.

    ``sae.config_schema`` (an :class:`ArchitectureConfig` subclass with ``architecture: Literal["name"]``)
    is the one place the architecture's fields are declared: the recipe class and the checkpoint schema
    are built from it here.
    """
    config = sae.__dict__.get("config_schema")
    if not (isinstance(config, type) and issubclass(config, ArchitectureConfig)):
        raise TypeError(f"{sae.__name__}.config_schema must be its own ArchitectureConfig subclass")
    name = config.architecture_name()
    if config.model_fields["architecture"].default != name:
        raise TypeError(f"{config.__name__}: give the discriminator its name as default: "
                        f"architecture: Literal[{name!r}] = {name!r}")
    if name in ARCHITECTURES and ARCHITECTURES[name].sae is not sae:
        raise ValueError(f"SAE architecture {name!r} is already registered by {ARCHITECTURES[name].sae.__name__}")
    for field in config.own_fields():
        if field in SAERecipeBase.model_fields or field in CheckpointConfig.model_fields:
            raise TypeError(f"{config.__name__}.{field} redeclares a field every recipe / checkpoint shares")
    recipe = _derived(config, SAERecipeBase, "Recipe", f"A {name} training recipe: the shared fields of "
                      f"SAERecipeBase and those of {config.__name__}; no others.")
    checkpoint = _derived(config, CheckpointConfig, "Checkpoint", f"A {name} checkpoint's config.json: the sizes "
                          f"of CheckpointConfig and the fields of {config.__name__} (strict; unread keys kept).")
    ARCHITECTURES[name] = Architecture(name, sae, config, recipe, checkpoint)
    return recipe


def recipe_union() -> Any:
    """``Annotated[Union[<each registered recipe class>], Field(discriminator="architecture")]``."""
    members = tuple(entry.recipe for entry in ARCHITECTURES.values())
    return Annotated[Union[members], Field(discriminator="architecture")]  # noqa: UP007 (a runtime tuple)


_STRUCTURAL_KEYS = ("architecture", "d_in", "d_sae")


def validate_sae_config(config: Any, source: str = "SAE config") -> tuple[type[DictionarySAE], int, int]:
    """``(architecture class, d_in, d_sae)`` of ``config``, its fields checked against the architecture's schema.

    Raises :class:`~scopebench.sae.validation.SAEConfigError` naming ``source`` (e.g. the config.json path),
    each bad field and what it should be; the config itself is not changed (unread keys are allowed).
    """
    if not isinstance(config, Mapping):
        raise SAEConfigError(f"{source}: an SAE config must be a JSON object / dict, got {type(config).__name__}")
    name = config.get("architecture")
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise SAEConfigError(f"{source}: unknown SAE architecture {name!r} (field 'architecture'); "
                             f"known: {sorted(ARCHITECTURES)}")
    if config.get("d_in") is None:
        raise SAEConfigError(f"{source}: SAE config needs 'd_in' (the token dimension); set it or let train_sae "
                             "infer it")
    entry = ARCHITECTURES[name]
    schema = validate_model(entry.checkpoint_schema, dict(config), source, f"{name} SAE config")
    return entry.sae, schema.d_in, schema.resolved_d_sae


def build_sae(config: Mapping[str, Any], *, source: str = "SAE config") -> DictionarySAE:
    """Instantiate an (untrained, zero) SAE from ``{"architecture", "d_in", "d_sae", **hparams}``.

    Recipe configs with ``expansion_factor`` instead of ``d_sae`` are accepted.  The fields the
    architecture reads are validated first (types and ranges); errors name ``source``.
    """
    cls, d_in, d_sae = validate_sae_config(config, source)
    hparams = {k: v for k, v in config.items() if k not in _STRUCTURAL_KEYS}
    return cls(d_in, d_sae, hparams)
