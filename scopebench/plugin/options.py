"""Every scopebench command-line option, defined once.

:data:`OPTIONS` is the single table of option definitions (flag, default, help, type). The pytest
plugin adds all of them (:func:`pytest_addoption`); a ``scopebench`` command that has the same option
adds that row with :func:`add_cli_options`, so flag, default, type and help cannot drift apart
(pytest-benchmark does the same with its ``add_*_options``).  The values are checked where they are
used: at pytest startup by :mod:`scopebench.plugin.session` and :mod:`scopebench.plugin.bench`, by
the command that reads them in the CLI.

Shared rules, one implementation each:

- ``NAME=PATH`` values (``--weights``, ``--sae``): :func:`split_name_path`;
- the results folder: a relative ``--results-dir`` is relative to the current folder; without it,
  :func:`default_results_dir` of the project root -- pytest's rootdir in a pytest run, and for
  ``scopebench leaderboard`` :func:`project_root` of the current folder (the nearest folder at or
  above it holding a ``pyproject.toml``, ``pytest.ini``, ``.pytest.ini``, ``tox.ini`` or
  ``setup.cfg``, which is where pytest puts its rootdir when it runs from that folder).

This module imports neither pytest nor torch: building the CLI's parser stays fast.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scopebench.pipeline.cache import CACHE_ENV
from scopebench.precision import DEFAULT_PRECISION, PRECISIONS

if TYPE_CHECKING:
    import pytest

#: The baseline recipes a bench session trains and evaluates unless ``--sae-recipes`` says otherwise.
DEFAULT_RECIPES = ("batchtopk", "topk", "relu", "jumprelu", "matryoshka")
DEVICES = ("auto", "cpu", "cuda")
RESULTS_SUBDIR = Path("leaderboard") / "results"
PLOTS_SUBDIR = Path("leaderboard") / "plots"
#: Files that make a folder the project root (pytest's config files; pytest roots a run at one of them).
ROOT_MARKERS = ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


@dataclass(frozen=True)
class Option:
    """One command-line option; :meth:`add_to` hands it to ``argparse`` or pytest's ``addoption``."""

    flag: str
    help: str
    default: Any = None
    type: Callable[[str], Any] | None = None  # converts the command-line string; None keeps it a str
    metavar: str | None = None
    action: str | None = None  # "append" (repeatable) or "store_true" (a switch); None stores one value
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        """The attribute name: ``config.getoption(dest)`` in pytest, ``args.<dest>`` in the CLI."""
        return self.flag.removeprefix("--").replace("-", "_")

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``add_argument`` / ``addoption`` (a fresh list default per parser)."""
        found: dict[str, Any] = {"help": self.help, "dest": self.dest}
        if self.action == "store_true":
            return {**found, "action": "store_true", "default": bool(self.default)}
        if self.action == "append":
            found.update(action="append", default=list(self.default or ()))
        else:
            found["default"] = self.default
        for key in ("type", "metavar", "choices"):
            if getattr(self, key) is not None:
                found[key] = getattr(self, key)
        return found

    def add_to(self, add: Callable[..., Any]) -> None:
        """``add`` is ``argparse.ArgumentParser.add_argument`` or a pytest group's ``addoption``."""
        add(self.flag, **self.kwargs())


OPTIONS: tuple[Option, ...] = (
    # inputs: weights, cache, device
    Option("--weights", action="append", default=(), metavar="NAME=PATH",
           help="weights file for a registry backbone, e.g. --weights dinov2-b=/models/dinov2.safetensors "
                "(repeatable; overrides --weights-config)"),
    Option("--weights-config", type=Path, metavar="FILE",
           help="a .json or .toml file mapping backbone names to weights files (relative paths are relative to "
                "the file); default $SCOPEBENCH_WEIGHTS_CONFIG"),
    Option("--cache-dir", type=Path, metavar="DIR",
           help=f"activation cache root (default: ${CACHE_ENV}, else ~/.cache/scopebench)"),
    Option("--device", default="auto", choices=DEVICES,
           help="where backbones run: auto (CUDA when available), cpu or cuda"),
    Option("--workers", type=int, metavar="N",
           help="image-loading processes of each extraction: DataLoader workers decode, resize and cut SCC views "
                "while the backbone computes (0: in the main process; default: the CPUs this process may use). "
                "The stored tokens are the same bytes for every N"),
    Option("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
           help="precision of the backbone's forward pass: fp32 (the paper's, default) or bf16 / fp16 under autocast "
                "on the device (faster on GPUs; another cache entry, recorded in result files)"),
    # the SAEs under test
    Option("--sae", action="append", default=(), metavar="[BACKBONE/]NAME=PATH",
           help="evaluate an SAE checkpoint (native, SAELens, dictionary_learning, overcomplete) under NAME; "
                "prefix BACKBONE/ to bind it to one backbone (repeatable)"),
    Option("--sae-recipes", default=",".join(DEFAULT_RECIPES), metavar="LIST",
           help="comma-separated baseline recipes (see `scopebench recipes`) to train and evaluate "
                "(empty: only --sae checkpoints)"),
    Option("--paper-sae", default="batchtopk", metavar="NAME",
           help="the SAE under test (verify mode): the paper's claims are asserted for it and a failed claim "
                "fails the run; every other SAE is scored (leaderboard mode): its claims are recorded, not "
                "asserted (default: the paper's BatchTopK recipe)"),
    Option("--seed", type=int, default=0, metavar="N",
           help="seed of baseline SAE training (seed-to-seed spread sets the regression tolerances)"),
    Option("--data-root", type=Path, metavar="DIR",
           help="root of the real datasets (imagenet/, ade20k/, nyud/); default $SCOPEBENCH_DATA"),
    Option("--scale", type=Path, metavar="FILE",
           help='a JSON file of changes to the built-in data sizes per backbone, e.g. {"planted": {"cds": '
                '{"images": 32}}} (fields: BenchScale and the analysis configs; recorded in the result files)'),
    Option("--planted-sizes", default="s", metavar="LIST",
           help="comma-separated sizes of the planted family to bench: s is the embedded default (planted); b and l "
                "(planted-b, planted-l) carry more class-informative context and serve Figure 8's claims across "
                "sizes, about 2 minutes each on 2 CPU cores (make bench-family benches all three)"),
    Option("--propagate", action="store_true",
           help="removal probes: run the edited tokens through the backbone's remaining blocks before probing "
                "(default: probe at the SAE layer)"),
    # outputs
    Option("--results-dir", type=Path, metavar="DIR",
           help=f"folder of the result JSON files (default: {RESULTS_SUBDIR} in the project root: pytest's "
                f"rootdir, or for `scopebench leaderboard` the nearest folder at or above the current one "
                f"holding a pyproject.toml, pytest.ini, tox.ini or setup.cfg); a relative DIR is relative to the "
                f"current folder"),
    Option("--no-results", action="store_true", help="print the claims table but write no result files"),
    Option("--replace", action="store_true",
           help="let a different model (other weights or config) replace a result file under a taken name; the "
                "old file is kept as <name>.replaced-<n> (without this, such a result is refused)"),
    Option("--baseline", type=Path, metavar="DIR",
           help="regression mode: compare every quantity and claim verdict with the result files in DIR (same "
                "backbone, SAE and weights) and fail on drift beyond a quantity's tolerance or any verdict flip"),
    Option("--update-baseline", action="store_true",
           help="with --baseline: write this run's result files to DIR as the new baseline instead of comparing"),
    Option("--plots-dir", type=Path, metavar="DIR",
           help=f"where figures are written (default: {PLOTS_SUBDIR} in the project root)"),
    Option("--no-progress", action="store_true", help="hide progress bars"),
)
BY_FLAG: dict[str, Option] = {option.flag: option for option in OPTIONS}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("scopebench", "scopebench benchmark")
    for option in OPTIONS:
        option.add_to(group.addoption)


def add_cli_options(parser: argparse.ArgumentParser, *flags: str) -> None:
    """Add the table's rows for ``flags`` to a ``scopebench`` command (the same flag, default and help)."""
    for flag in flags:
        BY_FLAG[flag].add_to(parser.add_argument)


def split_name_path(value: str, flag: str, form: str = "NAME=PATH", example: str = "") -> tuple[str, Path]:
    """``"NAME=PATH"`` -> ``(NAME, PATH with ~ expanded)``; ``ValueError`` naming the flag and the form."""
    name, sep, raw = value.partition("=")
    if not sep or not name.strip() or not raw.strip():
        hint = f", e.g. {flag} {example}" if example else ""
        raise ValueError(f"{flag} {value!r}: expected {form}{hint}")
    return name.strip(), Path(raw.strip()).expanduser()


def project_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding one of :data:`ROOT_MARKERS`, else ``start``."""
    start = Path(start).resolve()
    return next((folder for folder in (start, *start.parents)
                 if any((folder / marker).is_file() for marker in ROOT_MARKERS)), start)


def default_results_dir(root: Path) -> Path:
    """Where result files go without ``--results-dir``: ``leaderboard/results`` in the project ``root``."""
    return Path(root) / RESULTS_SUBDIR
