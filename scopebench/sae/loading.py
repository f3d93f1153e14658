"""``load_sae``: one entry point for native checkpoints, external formats and custom classes."""
from __future__ import annotations

import importlib
import inspect
import numbers
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from scopebench.sae.base import SparseAutoencoder
from scopebench.sae.checkpoint import CONFIG_FILE, WEIGHTS_FILE, is_native_checkpoint, load_native
from scopebench.sae.formats import (
    DICTIONARY_LEARNING_FILES,
    SAELENS_FILES,
    load_dictionary_learning,
    load_overcomplete,
    load_saelens,
)
from scopebench.sae.safetensors_io import read_safetensors
from scopebench.sae.validation import check_finite, validate_model

_CLASS_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_PROTOCOL_MEMBERS = ("d_in", "d_sae", "W_dec", "config", "encode", "decode")
_LOOKED_FOR = (
    f"native ({CONFIG_FILE} + {WEIGHTS_FILE}), SAELens ({' + '.join(SAELENS_FILES)}), "
    f"dictionary_learning ({' + '.join(DICTIONARY_LEARNING_FILES)}), "
    "or a spec dict {'format': 'overcomplete', 'path': ..., 'top_k': ...} / {'class': 'module:Class', 'config': {...}}"
)


_PROTOCOL_HELP = "needs d_in, d_sae, W_dec [d_sae, d_in], config, encode(x), decode(codes)"
_PROTOCOL_METHODS = ("encode", "decode")


def _check_protocol_class(target: str, cls: Any) -> None:
    """Before anything imported is called: ``cls`` must be a class with ``encode`` and ``decode`` methods.

    ``d_in``, ``d_sae``, ``W_dec`` and ``config`` may be set by ``__init__``; they are checked on the instance.
    """
    if not inspect.isclass(cls):
        raise TypeError(f"{target} is a {type(cls).__name__}, not a class; name a class (load_sae instantiates it "
                        f"as Class(**config)) that satisfies scopebench.sae.base.SparseAutoencoder ({_PROTOCOL_HELP})")
    missing = [name for name in _PROTOCOL_METHODS if not callable(getattr(cls, name, None))]
    if missing:
        raise TypeError(f"{target} does not satisfy scopebench.sae.base.SparseAutoencoder: the class lacks the "
                        f"methods {missing} ({_PROTOCOL_HELP})")


def _check_protocol_instance(target: str, sae: Any) -> None:
    missing = [name for name in _PROTOCOL_MEMBERS if not hasattr(sae, name)]
    if missing:
        raise TypeError(f"{target} does not satisfy scopebench.sae.base.SparseAutoencoder: missing {missing} "
                        f"({_PROTOCOL_HELP})")
    problems = []
    for name in ("d_in", "d_sae"):
        value = getattr(sae, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            problems.append(f"{name} must be a positive int, got {value!r}")
    if not problems:
        W_dec = sae.W_dec
        if not isinstance(W_dec, torch.Tensor) or tuple(W_dec.shape) != (sae.d_sae, sae.d_in):
            got = tuple(W_dec.shape) if isinstance(W_dec, torch.Tensor) else type(W_dec).__name__
            problems.append(f"W_dec must be a tensor of shape [d_sae, d_in] = {[sae.d_sae, sae.d_in]}, got {got}")
    if not isinstance(sae.config, Mapping):
        problems.append(f"config must be a dict, got {type(sae.config).__name__}")
    if problems:
        raise TypeError(f"{target} does not satisfy scopebench.sae.base.SparseAutoencoder: {'; '.join(problems)}")


def load_custom_class(target: str, config: dict[str, Any] | None = None, weights: str | Path | None = None) -> Any:
    """Import ``module:Class``, check it is an SAE class, instantiate it as ``Class(**config)``, check the instance."""
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import SAE class {target!r}: {err}") from None
    _check_protocol_class(target, cls)
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"SAE spec for {target}: 'config' must be a dict of keyword arguments for {class_name}, "
                        f"got {type(config).__name__}")
    kwargs = dict(config or {})
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as err:
        raise TypeError(f"SAE spec for {target}: 'config' {sorted(kwargs)} does not fit {class_name}"
                        f"{inspect.signature(cls)}: {err}") from None
    except ValueError:  # no signature to inspect (a builtin); the call below reports any mismatch
        pass
    sae = cls(**kwargs)
    _check_protocol_instance(target, sae)
    if weights is not None:
        if not callable(getattr(sae, "load_state_dict", None)):
            raise TypeError(f"SAE spec for {target} gives 'weights' but {class_name} has no load_state_dict "
                            "(make it a torch.nn.Module, or load the weights in __init__)")
        tensors = read_safetensors(Path(weights))
        check_finite(tensors, Path(weights))
        sae.load_state_dict(tensors)
    if not bool(torch.isfinite(sae.W_dec.detach()).all()):
        raise ValueError(f"{target}: W_dec has NaN/inf values; the SAE diverged or its weights are corrupt")
    return sae


class _ClassSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    class_: str = Field(alias="class", pattern=_CLASS_SPEC.pattern, description="'module:Class'")
    config: dict[str, Any] | None = Field(None, description="an object of keyword arguments for Class(**config)")
    weights: str | Path | None = Field(None, description="null or a safetensors file for load_state_dict")


def _load_spec(spec: dict[str, Any]) -> Any:
    if "class" in spec:
        parsed = validate_model(_ClassSpec, spec, f"SAE spec for class {spec['class']!r}", "custom-class spec")
        return load_custom_class(parsed.class_, parsed.config, parsed.weights)
    if spec.get("format") == "overcomplete":
        return load_overcomplete(spec)
    if "path" in spec:
        return _load_path(Path(spec["path"]))
    raise ValueError(f"unknown SAE spec {spec}; expected one of: {_LOOKED_FOR}")


def _load_path(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"no SAE at {path}")
    if path.is_dir():
        if is_native_checkpoint(path):
            return load_native(path)
        if all((path / name).is_file() for name in SAELENS_FILES):
            return load_saelens(path)
        if all((path / name).is_file() for name in DICTIONARY_LEARNING_FILES):
            return load_dictionary_learning(path)
    found = sorted(p.name for p in path.iterdir()) if path.is_dir() else [path.name]
    raise ValueError(f"unknown SAE format at {path} (found {found}); looked for {_LOOKED_FOR}")


def load_sae(path_or_spec: str | Path | dict[str, Any], *, expected_d_in: int | None = None) -> SparseAutoencoder:
    """Load an SAE from a folder, a ``module:Class`` string or a spec dict; check its ``d_in``."""
    if isinstance(path_or_spec, dict):
        sae = _load_spec(path_or_spec)
    elif isinstance(path_or_spec, str) and _CLASS_SPEC.match(path_or_spec) and not Path(path_or_spec).exists():
        sae = load_custom_class(path_or_spec)
    else:
        sae = _load_path(Path(path_or_spec))
    if expected_d_in is not None and sae.d_in != expected_d_in:
        raise ValueError(
            f"SAE has d_in={sae.d_in} but the backbone's tokens have d_in={expected_d_in}; "
            "load an SAE trained on this backbone and layer"
        )
    return sae
