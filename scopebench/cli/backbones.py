"""``scopebench backbones``: the backbone registry, where each value comes from, and local weight status.

The registry lives in ``scopebench.backbones``, which imports torch and timm: it is imported when the
command runs, not when the parser is built.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tabulate import tabulate

from scopebench.cli.weights import weights_status

if TYPE_CHECKING:
    from scopebench.backbones.spec import BackboneSpec

#: Fields whose provenance ``--provenance`` lists, in column order.
PROVENANCE_FIELDS = ("image_size", "patch_size", "n_prefix", "depth", "embed_dim", "n_heads", "layer", "tau",
                     "gamma", "pretrained_tag")
_PAPER_SOURCES = ("paper Table 5", "paper Table 4", "paper main text")
_HEADERS = ["name", "source", "model id", "tag", "image", "patch", "depth", "layer", "layer (paper)", "tau",
            "gamma", "weights"]


def ordinal(n: int) -> str:
    """English ordinal of a positive integer: 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ..."""
    if n % 100 in (11, 12, 13):
        return f"{n}th"
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _star(spec: BackboneSpec, field: str, text: str) -> str:
    """Mark values the paper does not state (our inference or the planted design)."""
    source = spec.provenance.get(field)
    return f"{text}*" if source is not None and source not in _PAPER_SOURCES else text


def paper_layer(spec: BackboneSpec) -> str:
    """The designated block as the paper words it: 1-based ordinal, "(last)" for the final block."""
    text = ordinal(spec.layer + 1) + (" (last)" if spec.layer == spec.depth - 1 else "")
    return _star(spec, "layer", text)


def _number(value: float | str | None) -> str:
    if value is None or value == "auto":
        return "auto"
    return f"{value:g}"


def backbone_row(spec: BackboneSpec) -> list[str]:
    return [spec.name, spec.source, spec.model_id, spec.pretrained_tag or "–", str(spec.image_size),
            str(spec.patch_size), str(spec.depth), _star(spec, "layer", str(spec.layer)), paper_layer(spec),
            _star(spec, "tau", _number(spec.tau)), _star(spec, "gamma", _number(spec.gamma)), weights_status(spec)[0]]


def render_backbones(specs: list[BackboneSpec]) -> str:
    table = tabulate([backbone_row(spec) for spec in specs], headers=_HEADERS, disable_numparse=True)
    return "\n".join([
        table, "",
        "layer: 0-based block index; layer (paper): the same block as the paper words it (1-based).",
        "tau auto: valley of the token log-norm histogram; gamma auto: valley of the CDS histogram.",
        "* not stated in the paper: our inference or the planted design (see --provenance).",
        "weights: found / missing locally (nothing is downloaded); `scopebench weights NAME` shows where to put them.",
    ])


def render_provenance(specs: list[BackboneSpec]) -> str:
    rows = [[spec.name, *(spec.provenance.get(field, "–") for field in PROVENANCE_FIELDS)] for spec in specs]
    return tabulate(rows, headers=["name", *PROVENANCE_FIELDS], disable_numparse=True)


def _run(args: argparse.Namespace) -> int:
    from scopebench.backbones.registry import REGISTRY

    unknown = [name for name in args.names if name not in REGISTRY]
    if unknown:
        print(f"unknown backbone(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}", file=sys.stderr)
        return 2
    specs = [REGISTRY[name] for name in (args.names or REGISTRY)]
    if args.provenance:
        print(render_provenance(specs))
        return 0
    try:
        print(render_backbones(specs))
    except ValueError as exc:  # a malformed $SCOPEBENCH_WEIGHTS_CONFIG
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def register_backbones(subparsers: argparse._SubParsersAction) -> None:
    """``scopebench backbones [NAME ...] [--provenance]``."""
    parser = subparsers.add_parser(
        "backbones", help="list the backbone registry: geometry, designated layer, tau, gamma, local weights",
        description="List every registered backbone with its designated layer (0-based and as the paper words "
                    "it), outlier threshold tau, CDS threshold gamma, and whether its weights are found locally "
                    "(offline: nothing is downloaded).")
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these backbones (default: all)")
    parser.add_argument("--provenance", action="store_true",
                        help="show where each field's value comes from (paper table, model config, inferred, design)")
    parser.set_defaults(handler=_run)
