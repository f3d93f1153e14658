"""The inputs of a session, checked at startup, and their session fixtures.

``--weights NAME=PATH`` (repeatable) and ``--weights-config FILE`` (or ``$SCOPEBENCH_WEIGHTS_CONFIG``;
read by :func:`scopebench.backbones.weights.read_config_file`) become one mapping backbone name ->
weights file, explicit ``--weights`` entries winning; ``--cache-dir``, ``--device`` and ``--workers``
are checked too (``--workers`` defaults to the CPUs this process may use).  Every problem is a ``pytest.UsageError`` naming the fix, before any test runs.
``HF_HUB_OFFLINE=1`` is set at configure time unless the user set it, so nothing ever waits on the
network.  Under ``torchrun`` each rank joins the launch's process group here
(:func:`scopebench.distributed.init_from_env`).  Fixtures: ``scopebench_options``, ``activation_store``, ``device``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pytest
import torch

from scopebench import distributed
from scopebench.backbones.registry import REGISTRY
from scopebench.backbones.sources import get_source
from scopebench.backbones.weights import CONFIG_ENV, WeightsNotFound, read_config_file
from scopebench.pipeline.cache import CACHE_ENV, ActivationStore, default_cache_dir
from scopebench.device import resolve_device
from scopebench.pipeline.loader import available_cpus
from scopebench.precision import DEFAULT_PRECISION
from scopebench.plugin.options import split_name_path


@dataclass(frozen=True)
class ScopebenchOptions:
    """The suite's options after validation (paths absolute, names known)."""

    weights: Mapping[str, Path]  # backbone name -> weights file (read-only mapping)
    weights_config: Path | None
    cache_dir: Path
    device: str  # as requested: auto | cpu | cuda
    workers: int = 0  # image-loading processes per extraction
    precision: str = DEFAULT_PRECISION  # of the backbone's forward pass

    def weights_for(self, backbone: str) -> Path | None:
        """Explicit weights file for ``backbone``, or None (then the Hugging Face cache is tried)."""
        return self.weights.get(backbone)


_OPTIONS_KEY = pytest.StashKey[ScopebenchOptions]()


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
    real = [n for n, spec in REGISTRY.items() if get_source(spec.source).takes_weights]
    if name not in real:
        why = f"the {name} backbone is built from its seed and takes no weight file" if name in REGISTRY \
            else f"unknown backbone {name!r}"
        raise pytest.UsageError(f"{origin}: {why}; backbones that take weights: {', '.join(real)}")
    if not path.is_file():
        raise pytest.UsageError(f"{origin}: weights file {path} for {name!r} does not exist; give the path of a "
                                f"downloaded checkpoint")
    return name, path.resolve()


def _read_weights_config(path: Path, flag: str) -> dict[str, Path]:
    """The mapping of ``--weights-config`` or ``$SCOPEBENCH_WEIGHTS_CONFIG`` (``flag``), every entry checked."""
    try:
        entries = read_config_file(path, flag)
    except (WeightsNotFound, ValueError) as err:
        raise pytest.UsageError(str(err)) from None
    return dict(_checked_weights(name, file, f"{flag} {path}") for name, file in entries.items())


def _parse_weights_flag(value: str) -> tuple[str, Path]:
    try:
        name, path = split_name_path(value, "--weights", example="dinov2-b=/models/m.safetensors")
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None
    return _checked_weights(name, path, f"--weights {value}")


def _cache_origin(option: object) -> str:
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
    workers = config.getoption("workers")
    if workers is not None and workers < 0:
        raise pytest.UsageError(f"--workers {workers}: give 0 (load images in the main process) or more workers")
    return ScopebenchOptions(weights=MappingProxyType(weights), weights_config=config_path,
                             cache_dir=checked_folder(cache_dir or default_cache_dir(), _cache_origin(cache_dir)),
                             device=device, workers=available_cpus() if workers is None else workers,
                             precision=config.getoption("precision"))


def _join_launch(config: pytest.Config) -> None:
    """Under ``torchrun`` every rank runs the whole session in step; join the launch's process group."""
    if not distributed.launched():
        return
    if config.getoption("numprocesses", None) or hasattr(config, "workerinput"):
        raise pytest.UsageError("pytest-xdist (-n) cannot run under torchrun: the ranks already split the work; "
                                "drop -n (or drop torchrun and keep -n)")
    try:
        distributed.init_from_env()
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config.stash[_OPTIONS_KEY] = options_from_config(config)
    _join_launch(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    distributed.leave()


@pytest.fixture(scope="session")
def scopebench_options(pytestconfig: pytest.Config) -> ScopebenchOptions:
    return pytestconfig.stash[_OPTIONS_KEY]


@pytest.fixture(scope="session")
def activation_store(scopebench_options: ScopebenchOptions) -> ActivationStore:
    return ActivationStore(scopebench_options.cache_dir)


@pytest.fixture(scope="session")
def device(scopebench_options: ScopebenchOptions) -> torch.device:
    return resolve_device(scopebench_options.device)
