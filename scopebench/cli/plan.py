"""``scopebench plan --backbone NAME [--scale paper]``: the work of each stage of a run, its estimated time on
this machine and what is already cached, before anything is run (``scopebench.suite.plan``)."""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from tabulate import tabulate

from scopebench.atomic import write_json_atomic
from scopebench.plugin.options import add_cli_options

if TYPE_CHECKING:
    from scopebench.suite.plan import Plan, StageEstimate

HEADERS = ["stage", "images", "fwd", "tokens", "cache", "SAE steps", "EMD", "grid", "epochs", "estimate", "cached"]
WIDTH = 120
LEGEND = ("fwd: image views through the designated block; tokens: patch + prefix tokens stored; cache: their "
          "float32 bytes (SAE: weights + resumable state); EMD: pairs on overlap grids of those sides; epochs: "
          "probe epochs over trials x 3 embeddings")


def count(n: float) -> str:
    """1234 -> "1,234"; 1234567 -> "1.23M" (a count in a narrow column)."""
    if n < 100_000:
        return f"{n:,.0f}"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    raise AssertionError("unreachable")


def size(n: float) -> str:
    """Bytes in decimal units (GB as disks are sold)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds >= 100 * 86400:
        return f"{seconds / 86400:,.0f} d"
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"


def core_hours(hours: float) -> str:
    if hours < 0.01:
        return "< 0.01"
    return f"{hours:,.0f}" if hours >= 1000 else f"{hours:.3g}"


def _estimate(estimate: StageEstimate) -> str:
    """The stage's seconds, or at least its EMD share when another rate was not measured."""
    if estimate.seconds is None and estimate.emd_seconds:
        return f">= {duration(estimate.emd_seconds)}"
    return duration(estimate.seconds)


def _blank(value: float, render) -> str:
    return render(value) if value else ""


def _grids(sides: list[int]) -> str:
    if not sides:
        return ""
    low, high = min(sides), max(sides)
    return f"{high}x{high}" if low == high else f"{high}..{low}"


def render_plan(plan: Plan) -> str:
    """The per-stage table (fits 120 columns) and its notes."""
    rows = []
    for i, stage in enumerate(plan.stages):
        estimate = "" if plan.estimates is None else _estimate(plan.estimates[i])
        rows.append([stage.name, _blank(stage.images, count), _blank(stage.forward_passes, count),
                     _blank(stage.tokens_stored, count), _blank(stage.cache_bytes, size),
                     _blank(stage.sae_steps, count), _blank(stage.total_emd_pairs, count),
                     _grids(list(stage.emd_pairs)), _blank(stage.probe_epochs, count), estimate,
                     "" if plan.cached is None else plan.cached[i]])
    total_bytes = sum(stage.cache_bytes for stage in plan.stages)
    known = plan.estimates is not None and all(e.seconds is not None for e in plan.estimates)
    total = duration(sum(e.seconds for e in plan.estimates)) if known else ""
    rows.append(["total", "", "", "", size(total_bytes), "", "", "", "", total, ""])
    headers = HEADERS if plan.cached is not None else HEADERS[:-1]
    table = [f"{plan.backbone}: {plan.scale} scale, SAE recipe {plan.recipe}",
             tabulate([row[: len(headers)] for row in rows], headers=headers, disable_numparse=True,
                      colalign=("left",) + ("right",) * (len(headers) - 1))]
    lines = [LEGEND, *plan.notes]
    calibration = plan.calibration
    if calibration is not None:
        emd = [(stage, e.emd_seconds) for stage, e in zip(plan.stages, plan.estimates or []) if e.emd_seconds]
        if calibration.sae_step_seconds is None:
            lines.append(f"estimates of the EMD stages only (--estimate emd), from a {calibration.seconds:.0f} s "
                         f"calibration on {calibration.device} ({calibration.cores} CPU cores)")
        else:
            lines.append(f"estimates from a {calibration.seconds:.0f} s calibration on {calibration.device} "
                         f"({calibration.cores} CPU cores): forward from {calibration.forward_note}; "
                         "image decoding from disk not included")
        if emd:
            # the exact solver always runs on the CPU's cores; Sinkhorn on the device
            share = ", ".join(f"{stage.name} {duration(seconds)}"
                              + (f" = {core_hours(seconds * calibration.cores / 3600)} CPU core-h"
                                 if stage.emd_method == "exact" or calibration.device == "cpu" else "")
                              for stage, seconds in emd)
            lines.append(f"EMD share of the estimate: {share}")
    if plan.cached is not None:
        lines.append("cached: token entries matched by backbone, kind, images (and dataset when known); "
                     "SAEs by backbone and recipe")
    return "\n".join(table + [""] + [textwrap.fill(line, WIDTH, subsequent_indent="  ") for line in lines])


def _run(args: argparse.Namespace) -> int:
    from scopebench.backbones.registry import REGISTRY
    from scopebench.device import resolve_device
    from scopebench.pipeline.cache import ActivationStore, default_cache_dir
    from scopebench.pipeline.loader import available_cpus
    from scopebench.sae.recipe import RecipeError
    from scopebench.suite.plan import make_plan
    from scopebench.suite.scales import SCALES, scale_name_for

    names = list(REGISTRY) if args.backbone == ["all"] else args.backbone
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        print(f"error: unknown backbone(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)} (or 'all')",
              file=sys.stderr)
        return 2
    try:
        device = str(resolve_device(args.device))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 0:
        print(f"error: --workers {args.workers}: give 0 (load images in the main process) or more", file=sys.stderr)
        return 2
    store = ActivationStore(args.cache_dir if args.cache_dir is not None else default_cache_dir())
    plans = []
    for name in names:
        scale = args.scale or scale_name_for(name)
        sizes = SCALES[scale]
        if args.emd_method is not None:
            sizes = sizes.updated({"cds": {"emd_method": args.emd_method},
                                   "attention_emd": {"method": args.emd_method}})
        try:
            plan = make_plan(name, scale, sizes, args.recipe, estimate_rates=args.estimate,
                             device=device, store=store, data_root=args.data_root, progress=not args.no_progress,
                             workers=available_cpus() if args.workers is None else args.workers,
                             precision=args.precision)
        except (FileNotFoundError, RecipeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        plans.append(plan)
        print(render_plan(plan) + "\n", flush=True)
    if args.json is not None:
        write_json_atomic(args.json, {"plans": [plan.to_json() for plan in plans]})
    return 0


def register_plan(subparsers: argparse._SubParsersAction) -> None:
    """``scopebench plan --backbone NAME [--scale paper] [--estimate all|emd|none] [--json FILE]``."""
    from scopebench.suite.plan import ESTIMATES
    from scopebench.suite.scales import SCALES

    parser = subparsers.add_parser(
        "plan", help="per stage of a run: images, forward passes, tokens and cache bytes, SAE steps, EMD pairs, "
                     "probe epochs, estimated time on this machine, and what is cached",
        description="Print the work of every stage of a bench run from the configs the run uses, with a time "
                    "estimate from a short calibration on this machine (a few forward passes of a random-init "
                    "model of the same shape, SAE steps, EMD pairs, probe epochs) and what the activation "
                    "cache already holds.")
    parser.add_argument("--backbone", action="append", required=True, metavar="NAME",
                        help="registry backbone (repeatable; 'all' for every one)")
    parser.add_argument("--scale", choices=tuple(SCALES), default=None,
                        help="the run's sizes (default: the scale a bench run of the backbone uses: planted for "
                             "the planted backbone, paper for the others)")
    parser.add_argument("--recipe", default="batchtopk", metavar="NAME",
                        help="SAE recipe whose training is planned (see `scopebench recipes`)")
    parser.add_argument("--emd-method", choices=("exact", "sinkhorn"), default=None,
                        help="plan CDS and attention EMD with this solver instead of the scale's (sinkhorn: "
                             "batched on --device, meant for a GPU)")
    parser.add_argument("--estimate", choices=ESTIMATES, default="all",
                        help="what to calibrate: every rate (default; a minute or more per large model on a CPU), "
                             "only the EMD solvers' (seconds), or none (the work only)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the plans as JSON")
    add_cli_options(parser, "--cache-dir", "--data-root", "--device", "--workers", "--precision", "--no-progress")
    parser.set_defaults(handler=_run)
