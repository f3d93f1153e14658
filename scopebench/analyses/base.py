"""What every analysis is made of: a config, a typed output whose fields are the quantities, a computation.

An analysis folder (``scopebench/analyses/<name>/``) holds ``config.py`` (the settings that
change its numbers, recorded beside them in result files), ``output.py`` (a pydantic model
whose fields are the measured quantities, each with its meaning and unit) and ``compute.py``
(the computation on the bench's cached inputs).  The quantity catalogue, the result-file
schema, the schema document's quantity table and the leaderboard columns are all read from
the output models, so a quantity is described once, where it is computed.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo


Level = Literal["sae", "backbone"]
#: How a quantity is shown in every table (terminal, Markdown, HTML), by its unit, as a format spec: ".Nf" is N
#: decimals, ".Ng" N significant digits (FVU spans 1e-4 on the planted default to 0.1 on real backbones). One
#: precision per quantity, fine enough for the paper's smallest reported differences (FVU_O 0.001, CS 0.999).
UNIT_FORMATS: dict[str, str] = {"unitless": ".3g", "cosine": ".4f", "latents": ".3g", "percent": ".2f",
                                "percent points": ".2f", "tokens": ".0f", "features": ".0f", "L2 norm": ".2f",
                                "CDS": ".3f", "TV": ".3f", "patch units": ".3f", "depth unit": ".3f"}


def quantity(description: str, unit: str, *, column: str | None = None, default: Any = ...) -> Any:
    """A measured quantity of an output model: its meaning, unit and (optionally) its leaderboard column."""
    if unit not in UNIT_FORMATS:
        raise ValueError(f"unit {unit!r} has no display precision; add it to UNIT_FORMATS")
    extra: dict[str, Any] = {"unit": unit}
    if column is not None:
        extra["column"] = column
    return Field(default, description=description, json_schema_extra=extra)


def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


@dataclass(frozen=True)
class QuantityInfo:
    name: str  # base name (indexed quantities are stored as name[s=N])
    analysis: str
    description: str
    unit: str
    column: str | None

    @property
    def format(self) -> str:
        return UNIT_FORMATS[self.unit]


class Unavailable(Exception):
    """An input this machine lacks (weights, a dataset); the message says how to provide it. Bench cases skip."""


class AnalysisConfig(BaseModel):
    """Settings of one analysis; every field is recorded beside the numbers it produced."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AnalysisOutput(BaseModel):
    """Typed result of one analysis. Fields made with :func:`quantity` are its measured quantities."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Quantities stored per SCC shift (``name[s=N]``): base name -> (description, unit, column at s=1 or None).
    INDEXED_QUANTITIES: ClassVar[dict[str, tuple[str, str, str | None]]] = {}
    #: Quantity fields that follow from the output's other fields: field -> function of the raw field values
    #: (a mapping; None when its inputs are absent). They are recomputed whenever an output is built or read,
    #: so a stored value can never disagree with its inputs and files written before the field existed gain it.
    DERIVED: ClassVar[dict[str, Callable[[Mapping[str, Any]], float | None]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _derive(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and cls.DERIVED:
            data = {**data, **{name: derive(data) for name, derive in cls.DERIVED.items()}}
        return data

    @classmethod
    def quantity_fields(cls) -> dict[str, FieldInfo]:
        return {name: info for name, info in cls.model_fields.items() if "unit" in _extra(info)}

    @classmethod
    def catalogue(cls, analysis: str) -> list[QuantityInfo]:
        found = [QuantityInfo(name, analysis, info.description or "", _extra(info)["unit"], _extra(info).get("column"))
                 for name, info in cls.quantity_fields().items()]
        found += [QuantityInfo(name, analysis, text, unit, column)
                  for name, (text, unit, column) in cls.INDEXED_QUANTITIES.items()]
        return found

    def quantities(self) -> dict[str, float]:
        """Flat ``quantity key -> value`` of what was measured (None fields, i.e. not run, left out)."""
        values = {name: getattr(self, name) for name in self.quantity_fields()}
        return {k: float(v) for k, v in values.items() if v is not None}

    def merged_over(self, old: AnalysisOutput) -> AnalysisOutput:
        """This output on top of an earlier one of the same analysis and config: fields it has replace old ones."""
        return type(self).model_validate({**old.model_dump(), **self.model_dump(exclude_none=True)})


class Inputs(Protocol):
    """What an analysis may ask of the bench (implemented by :class:`scopebench.suite.workbench.Workbench`)."""

    device: Any
    progress: bool
    workers: int  # image-loading processes of a forward loop
    precision: str  # of every backbone forward (scopebench.precision)

    def backbone(self, name: str) -> Any: ...
    def dataset(self, backbone: str, stage: str) -> Any: ...
    def tokens(self, backbone: str, stage: str) -> Any: ...
    def scc_tokens(self, backbone: str, shift: int) -> Any: ...
    def sae(self, backbone: str, name: str) -> Any: ...
    def tau(self, backbone: str) -> float: ...
    def run(self, analysis: str, backbone: str, sae: str | None = None, **options: Any) -> AnalysisOutput: ...
    def persisted(self, key: dict[str, Any], model: type[BaseModel], build: Callable[[], Any]) -> Any:
        """``build()`` once per ``key`` across sessions: a checksummed memo in the activation store."""
    def once(self, key: tuple, build: Callable[[], Any]) -> Any:
        """``build()`` once per ``key`` in this session (inputs several SAEs share, e.g. probe targets)."""


@dataclass(frozen=True)
class Analysis:
    """One analysis: ``compute(inputs, backbone, sae, config, **options) -> output``, in ``<name>/compute.py``.

    The computation is imported when first run, so reading configs, outputs and result files
    (claims, the leaderboard, the CLI) never imports torch.

    ``level`` "backbone" analyses need no SAE (attention EMD); their results live in the
    backbone-level result record.  ``options`` of ``compute`` select part of the work (which
    probe tasks, which shifts) without changing any number.
    """

    name: str
    title: str  # where the paper reports it
    level: Level
    stage: str | None  # the image stage its numbers describe (a result's dataset entry); None: several
    config: type[AnalysisConfig]
    output: type[AnalysisOutput]

    @property
    def compute(self) -> Callable[..., AnalysisOutput]:
        return importlib.import_module(f"scopebench.analyses.{self.name}.compute").compute

