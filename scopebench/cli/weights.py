"""``scopebench weights NAME``: where a backbone's weights are looked up, and whether they are found.

``scopebench.backbones`` imports torch and timm, so it is imported when the command runs, not when the
parser is built: ``scopebench --help`` and the light commands stay fast.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tabulate import tabulate

if TYPE_CHECKING:
    from scopebench.backbones.spec import BackboneSpec


def weights_status(spec: BackboneSpec, explicit: Path | None = None) -> tuple[str, Path | None, str | None]:
    """``(status, path, message)``: status is "found", "missing" or "built-in" (the planted backbone).

    Offline only: resolution reads local files, and ``HF_HUB_OFFLINE`` is set if the caller left it unset.
    A malformed weights config file raises ``ValueError``.
    """
    from scopebench.backbones.sources import get_source

    if not get_source(spec.source).takes_weights:
        return "built-in", None, None
    from scopebench.backbones.weights import WeightsNotFound, resolve_weights

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return "found", resolve_weights(spec, weights=explicit), None
    except WeightsNotFound as exc:
        return "missing", None, str(exc)


def lookup_places(spec: BackboneSpec, explicit: Path | None = None) -> list[list[str]]:
    """The places ``resolve_weights`` tries, in order, as ``[step, place, location]`` rows.

    An explicit file is the only place tried when given: a wrong path is an error, not a fall-through.
    """
    from scopebench.backbones.weights import CONFIG_ENV, candidate_filenames, hf_cache_dir

    if explicit is not None:
        return [["1", "explicit file (--weights)", str(explicit)]]
    config = os.environ.get(CONFIG_ENV)
    rows = [["1", "explicit file (--weights)", "not given"],
            ["2", f"${CONFIG_ENV}", f"{config} (entry {spec.name!r})" if config else "unset"]]
    repo_dir = hf_cache_dir() / f"models--{(spec.hf_hub_id or '').replace('/', '--')}"
    for filename in candidate_filenames(spec):
        rows.append(["3", f"Hugging Face cache, repo {spec.hf_hub_id}", str(repo_dir / "snapshots" / "*" / filename)])
    return rows


def _run(args: argparse.Namespace) -> int:
    from scopebench.backbones.registry import get_spec

    try:
        spec = get_spec(args.name)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    from scopebench.backbones.sources import get_source

    if not get_source(spec.source).takes_weights:
        print(f"{spec.name} is built in: it has no pretrained weights to look up")
        return 0
    print(f"backbone {spec.name}: {spec.source} {spec.model_id}, tag {spec.pretrained_tag}")
    print("looked up in this order (first hit wins, nothing is downloaded):")
    print(tabulate(lookup_places(spec, args.weights), headers=["step", "place", "location"], disable_numparse=True))
    print()
    try:
        status, path, message = weights_status(spec, args.weights)
    except ValueError as exc:  # a malformed $SCOPEBENCH_WEIGHTS_CONFIG
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if status == "found":
        print(f"found: {path}")
        return 0
    print(f"missing: {message}", file=sys.stderr)
    return 1


def register_weights(subparsers: argparse._SubParsersAction) -> None:
    """``scopebench weights NAME [--weights PATH]``."""
    parser = subparsers.add_parser(
        "weights", help="show where a backbone's weights are looked up and whether they are found (exit 1 if not)",
        description="Show the places scopebench looks for a backbone's pretrained weights, in order, and the file "
                    "it would use. Exit 0 when found, 1 when missing (with instructions), 2 on bad input.")
    parser.add_argument("name", metavar="NAME", help="backbone name, as listed by `scopebench backbones`")
    parser.add_argument("--weights", type=Path, default=None, metavar="PATH",
                        help="check this explicit weight file instead of the config file and the cache")
    parser.set_defaults(handler=_run)
