"""Checks shared by the SAE loaders: typed config fields, JSON config files, finite weights.

Every error names where the problem is (a file, or what the caller passes as ``source``), the
field or tensor, and what a valid value looks like, so a bad checkpoint is refused at load
instead of being evaluated with a silently wrong reading of its config.
"""
from __future__ import annotations

import difflib
import json
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, BeforeValidator, ValidationError


class SAEConfigError(ValueError):
    """An SAE config, spec or recipe that cannot be used as written."""


def _plain_number(value: Any) -> Any:
    """numpy / other numeric scalars to ``int`` / ``float``; bools and strings pass on to be refused."""
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError('must be a boolean: true or false (or the string "true" / "false")')


#: Use in models with ``strict=True``: an integer (not a bool, float or numeric string).
ConfigInt = Annotated[int, BeforeValidator(_plain_number)]
#: Use in models with ``strict=True, allow_inf_nan=False``: a finite number (not a bool or string).
ConfigFloat = Annotated[float, BeforeValidator(_plain_number)]
#: A JSON boolean, or exactly the strings "true" / "false" (any case); ``"no"``, ``0``, ``1`` are refused.
ConfigBool = Annotated[bool, BeforeValidator(_boolean)]


def _field_names(model: type[BaseModel]) -> dict[str, Any]:
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _field_hint(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str | None:
    if model is None or not loc or not isinstance(loc[0], str):
        return None
    field = _field_names(model).get(loc[0])
    return field.description if field is not None else None


def describe_validation_error(err: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """One line per problem: ``field: what is wrong (got value); expected ...`` (the field's description)."""
    lines = []
    for problem in err.errors(include_url=False):
        loc = tuple(problem["loc"])
        msg = str(problem["msg"]).removeprefix("Value error, ")
        where = ".".join(str(part) for part in loc)
        if problem["type"] == "missing":
            line = f"{where}: missing"
        elif problem["type"] == "extra_forbidden":
            line = f"{where}: unknown field (got {problem['input']!r})"
            if model is not None and len(loc) == 1:
                known = sorted(_field_names(model))
                close = difflib.get_close_matches(str(loc[0]), known, n=1)
                line += f"; did you mean {close[0]!r}?" if close else f"; known fields: {known}"
        elif loc:
            line = f"{where}: {msg} (got {problem['input']!r})"
        else:
            line = msg
        hint = _field_hint(model, loc)
        if hint and problem["type"] != "extra_forbidden":
            line += f"; expected {hint}"
        lines.append(line)
    return lines


def validate_model(model: type[BaseModel], data: Any, source: str, what: str) -> Any:
    """``model.model_validate(data)``, or an :class:`SAEConfigError` naming ``source`` and each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = "\n".join(f"  - {line}" for line in describe_validation_error(err, model))
        raise SAEConfigError(f"{source}: invalid {what}:\n{problems}") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        raise SAEConfigError(f"duplicate keys {duplicated}")
    return dict(pairs)


def parse_json_object(text: str, source: str, what: str) -> dict[str, Any]:
    """The JSON object in ``text``; refuses non-JSON, non-objects and duplicate keys, naming ``source``."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as err:
        raise SAEConfigError(f"{source} is not valid JSON ({err}); fix the {what} file's syntax") from None
    except SAEConfigError as err:
        raise SAEConfigError(f"{source}: {err} in the {what}; keep one entry per key") from None
    if not isinstance(data, dict):
        raise SAEConfigError(f"{source} must hold a JSON object ({{\"field\": value, ...}}) for the {what}, "
                             f"got a JSON {json_type(data)}")
    return data


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type (``array``, ``string``, ...) for error messages."""
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """:func:`parse_json_object` of the file ``path`` (unreadable / non-UTF-8 files are refused too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise SAEConfigError(f"{path} is not UTF-8 text ({err}); the {what} must be a JSON file") from None
    except OSError as err:
        raise SAEConfigError(f"cannot read the {what} {path}: {err}") from None
    return parse_json_object(text, str(path), what)


def require_mapping(value: Any, source: str, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SAEConfigError(f"{source}: {field} must be a JSON object ({{...}}), got a {json_type(value)} {value!r}")
    return value


def check_finite(tensors: Mapping[str, torch.Tensor], where: Path | str) -> None:
    """Refuse NaN / inf values in floating-point tensors, naming each bad tensor of ``where``."""
    bad = []
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor) or not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        finite = torch.isfinite(tensor)
        if bool(finite.all()):
            continue
        n_nan = int(torch.isnan(tensor).sum())
        n_inf = int((~finite).sum()) - n_nan
        bad.append(f"{name} ({n_nan} NaN, {n_inf} inf of {tensor.numel()} values)")
    if bad:
        raise ValueError(f"{where}: non-finite weights in tensor(s) {', '.join(bad)}; the SAE diverged or the file is "
                         "corrupt — retrain or re-export it (scopebench never evaluates NaN/inf weights)")
