"""pytest plugin: the suite's command-line options and session fixtures.

Options: ``--weights NAME=PATH`` (repeatable), ``--weights-config FILE`` (JSON, or TOML on
Python 3.11+, mapping backbone name -> weights file; relative paths are relative to the
file), ``--cache-dir`` (activation cache root) and ``--device auto|cpu|cuda``.  Explicit
``--weights`` entries override the config file.  ``HF_HUB_OFFLINE=1`` is set at configure
time unless the user set it, so nothing ever waits on the network.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import torch

from scopebench.backbones.registry import REGISTRY
from scopebench.backbones.weights import CONFIG_ENV
from scopebench.cache import CACHE_ENV, ActivationStore, default_cache_dir
from scopebench.device import resolve_device

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ScopebenchOptions:
    """The suite's options after validation (paths absolute, names known)."""

    weights: Mapping[str, Path]  # backbone name -> weights file (read-only mapping)
    weights_config: Path | None
    cache_dir: Path
    device: str  # as requested: auto | cpu | cuda

    def weights_for(self, backbone: str) -> Path | None:
        """Explicit weights file for ``backbone``, or None (then the Hugging Face cache is tried)."""
        return self.weights.get(backbone)


_OPTIONS_KEY = pytest.StashKey[ScopebenchOptions]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("scopebench", "scopebench benchmark")
    group.addoption("--weights", action="append", default=[], metavar="NAME=PATH",
                    help="weights file for a registry backbone, e.g. --weights dinov2-b=/models/dinov2.safetensors "
                         "(repeatable; overrides --weights-config)")
    group.addoption("--weights-config", default=None, metavar="FILE",
                    help="JSON (or TOML) file mapping backbone names to weights files")
    group.addoption("--cache-dir", default=None, metavar="DIR",
                    help=f"activation cache root (default: ${CACHE_ENV}, else ~/.cache/scopebench)")
    group.addoption("--device", default="auto", choices=DEVICES,
                    help="where backbones run: auto (CUDA when available), cpu or cuda")


def checked_folder(value: str | os.PathLike[str], flag: str) -> Path:
    """``value`` as an absolute folder path the run can create or write, else a usage error at startup.

    Checked before any test runs, so a folder option that names a file never loses a run's
    results after it computed them.
    """
    path = Path(value).expanduser().resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        what = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise pytest.UsageError(f"{flag} {value}: {what}; give a folder (it is created when missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise pytest.UsageError(f"{flag} {value}: {existing} is not writable by this user; give another folder")
    return path


def _checked_weights(name: str, path: Path, origin: str) -> tuple[str, Path]:
    real = [n for n, spec in REGISTRY.items() if spec.source != "planted"]
    if name not in real:
        why = "the planted backbone is built from its seed and takes no weight file" if name in REGISTRY \
            else f"unknown backbone {name!r}"
        raise pytest.UsageError(f"{origin}: {why}; backbones that take weights: {', '.join(real)}")
    if not path.is_file():
        raise pytest.UsageError(f"{origin}: weights file {path} for {name!r} does not exist; give the path of a "
                                f"downloaded checkpoint")
    return name, path.resolve()


def _read_weights_config(path: Path, flag: str) -> dict[str, Path]:
    """The mapping of ``--weights-config`` or ``$SCOPEBENCH_WEIGHTS_CONFIG`` (``flag``), every entry checked."""
    if not path.is_file():
        raise pytest.UsageError(f"{flag} {path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:
                raise pytest.UsageError(f"{flag} {path}: TOML needs Python 3.11+; write the same "
                                        f"mapping as JSON") from None
            data: Any = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as err:
        raise pytest.UsageError(f"{flag} {path}: cannot parse ({err}); expected a mapping "
                                f'{{"backbone-name": "path/to/weights"}}') from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise pytest.UsageError(f"{flag} {path}: expected a flat mapping "
                                f'{{"backbone-name": "path/to/weights"}}, got {type(data).__name__}')
    origin = f"{flag} {path}"
    return dict(_checked_weights(name, path.parent / Path(value).expanduser(), origin) for name, value in data.items())


def _parse_weights_flag(value: str) -> tuple[str, Path]:
    name, sep, raw = value.partition("=")
    if not sep or not name or not raw:
        raise pytest.UsageError(f"--weights {value!r}: expected NAME=PATH, e.g. --weights dinov2-b=/models/m.safetensors")
    return _checked_weights(name.strip(), Path(raw).expanduser(), f"--weights {value}")


def _cache_origin(option: str | None) -> str:
    if option:
        return "--cache-dir"
    return f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "the default cache folder"


def options_from_config(config: pytest.Config) -> ScopebenchOptions:
    """Validate the command-line options; errors are ``pytest.UsageError`` naming the fix."""
    config_file, flag = config.getoption("weights_config"), "--weights-config"
    if not config_file and os.environ.get(CONFIG_ENV):  # checked at startup too, not case by case
        config_file, flag = os.environ[CONFIG_ENV], f"${CONFIG_ENV}"
    weights: dict[str, Path] = {}
    config_path = Path(config_file).expanduser().resolve() if config_file else None
    if config_path is not None:
        weights.update(_read_weights_config(config_path, flag))
    weights.update(_parse_weights_flag(value) for value in config.getoption("weights"))
    cache_dir = config.getoption("cache_dir")
    device = config.getoption("device")
    if device == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: CUDA is not available here; use --device cpu or --device auto")
    return ScopebenchOptions(weights=MappingProxyType(weights), weights_config=config_path,
                             cache_dir=checked_folder(cache_dir or default_cache_dir(), _cache_origin(cache_dir)),
                             device=device)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config.stash[_OPTIONS_KEY] = options_from_config(config)


@pytest.fixture(scope="session")
def scopebench_options(pytestconfig: pytest.Config) -> ScopebenchOptions:
    return pytestconfig.stash[_OPTIONS_KEY]


@pytest.fixture(scope="session")
def activation_store(scopebench_options: ScopebenchOptions) -> ActivationStore:
    return ActivationStore(scopebench_options.cache_dir)


@pytest.fixture(scope="session")
def device(scopebench_options: ScopebenchOptions) -> torch.device:
    return resolve_device(scopebench_options.device)
