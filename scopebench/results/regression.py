"""Regression mode: a run's result files against a stored baseline, quantity by quantity, verdict by verdict.

A baseline folder holds result files (the same schema) plus ``meta/tolerances.json``: for every quantity
key, the seed-to-seed spread measured on the planted default (the largest ``|x_seed - x_0|`` over
runs that differ only in the SAE training seed, ``--seed``) and the tolerance derived from it,
``TOLERANCE_FACTOR`` times that spread, never below ``REL_FLOOR`` of the baseline value: quantities
that no seed moves (attention EMD needs no SAE) still differ across CPUs in their last float bits.
``scopebench tolerances SEED_DIR...`` writes the file; docs/regression.md lists the values.

A run regresses when a quantity moves more than its tolerance, a baseline quantity is missing, or a
claim's verdict flips, unless the tolerance runs could not pin that verdict down (``unstable_verdicts``:
the runs disagree on it, or one holds it by less than its quantities' tolerances let its margin move).
Records are matched by backbone (and its weights) and SAE name.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from scopebench.analyses import ANALYSES
from scopebench.claims.registry import CLAIMS_BY_ID, margin_tolerance
from scopebench.results.records import ResultFileError, ResultRecord, load_result, result_path, write_result

TOLERANCES_FILE = "meta/tolerances.json"  # a subfolder: the baseline folder itself holds only result files
TOLERANCE_FACTOR = 3.0
REL_FLOOR = 1e-6


def _quantities(record: ResultRecord) -> dict[str, float]:
    """``analysis/quantity -> value`` of every finite measured quantity a record holds.

    Derived quantities (an output's ``DERIVED``, e.g. high_share from n_low and n_high) are left out: they
    follow from quantities compared here, so a tolerance of theirs would only restate those.
    """
    found = {}
    for analysis in record.analyses:
        derived = ANALYSES[analysis].output.DERIVED
        for key, value in record.output(analysis).quantities().items():
            if math.isfinite(value) and key not in derived:
                found[f"{analysis}/{key}"] = value
    return found


def _label(record: ResultRecord) -> str:
    return record.sae.name if record.sae else "(backbone)"


def _who(record: ResultRecord) -> str:
    """``backbone/SAE`` (``backbone/(backbone)`` for a backbone-level record): the prefix of its tolerance keys."""
    return f"{record.backbone.name}/{_label(record)}"


def _within_tolerance(runs: Sequence[Sequence[ResultRecord]], quantities: dict[str, dict[str, Any]]) -> set[str]:
    """``backbone/SAE/claim`` of the verdicts whose margin, at some seed, is no larger than
    :func:`~scopebench.claims.registry.margin_tolerance` of the claim's quantities.

    Drift within the tolerances is not a regression, so a verdict it can flip (a CPU whose rounding moves a
    probe's mIoU by less than its seed spread) must not fail one either.  Quantities without a tolerance
    (derived ones, e.g. high_share) count as exact.
    """
    by_name: dict[str, dict[str, float]] = {}
    for key, entry in quantities.items():  # backbone/SAE/analysis/quantity
        backbone, sae, _, name = key.split("/", 3)
        by_name.setdefault(f"{backbone}/{sae}", {})[name] = entry["tolerance"]
    near = set()
    for run in runs:
        for record in run:
            tolerance = by_name.get(_who(record), {})
            for claim_id, verdict in record.claims.items():
                claim = CLAIMS_BY_ID.get(claim_id)
                if claim is None or verdict.margin is None:
                    continue
                measured = {k: v for k, v in verdict.measured.items() if v is not None}
                try:
                    slack = margin_tolerance(claim, measured, lambda name: tolerance.get(name, 0.0))
                except ValueError:  # the file lacks a value the claim compares: nothing to judge
                    continue
                if abs(verdict.margin) <= slack:
                    near.add(f"{_who(record)}/{claim_id}")
    return near


def spread_tolerances(runs: Sequence[Sequence[ResultRecord]], earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tolerances from result records of several seeds (``runs[0]`` the reference seed).

    ``earlier``, a tolerances file measured before (other machines, other CPU kernels), keeps what it
    learnt: a quantity keeps the larger of the two tolerances, and a verdict either found unstable stays
    so.  A new baseline measured on one machine would otherwise forget the spread only another CPU shows,
    and a CI runner with that CPU would fail on rounding.
    """
    measured = [{_who(r): _quantities(r) for r in run} for run in runs]  # once per record, not per quantity
    previous = {} if earlier is None else earlier["quantities"]
    quantities: dict[str, dict[str, Any]] = {}
    for key, values in measured[0].items():
        for name, base in values.items():
            others = [run[key].get(name) for run in measured[1:] if key in run]
            spread = max((abs(v - base) for v in others if v is not None), default=0.0)
            entry = {"spread": spread, "tolerance": max(TOLERANCE_FACTOR * spread, REL_FLOOR * abs(base))}
            kept = previous.get(f"{key}/{name}")
            if kept is not None and kept["tolerance"] > entry["tolerance"]:
                entry = {"spread": kept["spread"], "tolerance": kept["tolerance"], "kept_from_earlier": True}
            quantities[f"{key}/{name}"] = entry
    verdicts: dict[str, set[bool]] = {}
    for run in runs:
        for record in run:
            for claim, verdict in record.claims.items():
                verdicts.setdefault(f"{_who(record)}/{claim}", set()).add(verdict.passed)
    # verdicts the seeds themselves disagree on, or that some seed holds by less than the tolerances of the
    # quantities they compare: their flip is within the spread, not a regression
    unstable = {key for key, seen in verdicts.items() if len(seen) > 1} | _within_tolerance(runs, quantities)
    method = (f"tolerance = max({TOLERANCE_FACTOR:g} x the largest |x_seed - x_0| over the seeds, "
              f"{REL_FLOOR:g} x |baseline|); a verdict is unstable when the seeds disagree on it or a seed's "
              "margin is within what the tolerances of its quantities allow")
    found: dict[str, Any] = {"method": method, "seeds": len(runs), "quantities": quantities}
    if earlier is not None:
        unstable |= set(earlier.get("unstable_verdicts", [])) & set(verdicts)
        found["method"] = method + "; or an earlier file's larger tolerance (kept_from_earlier)"
        found["earlier_seeds"] = earlier["seeds"]
    return found | {"unstable_verdicts": sorted(unstable)}


@dataclass(frozen=True)
class Drift:
    record: str
    quantity: str
    baseline: float | str
    now: float | str
    delta: float | str
    tolerance: float | str


def compare(now: ResultRecord, base: ResultRecord, tolerances: dict[str, Any],
            unstable: frozenset[str] = frozenset()) -> list[Drift]:
    """What moved beyond its tolerance, went missing, or flipped its verdict (unless the seeds already disagreed on
    it: ``unstable``, keys ``backbone/SAE/claim``)."""
    who = _who(now)
    drifts = []
    current = _quantities(now)
    for name, value in _quantities(base).items():
        key = f"{who}/{name}"
        tolerance = tolerances.get(key, {}).get("tolerance", REL_FLOOR * abs(value))
        if name not in current:
            drifts.append(Drift(who, name, value, "missing", "-", tolerance))
        elif abs(current[name] - value) > tolerance:
            drifts.append(Drift(who, name, value, current[name], current[name] - value, tolerance))
    for claim, verdict in base.claims.items():
        found = now.claims.get(claim)
        if found is not None and f"{who}/{claim}" in unstable:
            continue
        if found is None or found.passed != verdict.passed:
            held = {True: "held", False: "not held", None: "not checked"}
            drifts.append(Drift(who, f"claim {claim}", held[verdict.passed],
                                held[None if found is None else found.passed], "flip", "-"))
    return drifts


def compare_dirs(records: Iterable[ResultRecord], baseline_dir: Path) -> tuple[bool, str]:
    """Compare each record with its baseline file; ``(passed, readable report)``."""
    tolerances, unstable = _read_tolerances(baseline_dir)
    drifts, compared, missing = [], 0, []
    for record in records:
        path = result_path(baseline_dir, record.backbone.name, record.sae.name if record.sae else None)
        if not path.is_file():
            missing.append(record.label)
            continue
        base = load_result(path)
        if base.backbone.weights_id != record.backbone.weights_id:
            missing.append(f"{record.label} (baseline made with other weights: {base.backbone.weights_id})")
            continue
        if base.backbone.precision != record.backbone.precision:
            missing.append(f"{record.label} (baseline made at precision {base.backbone.precision}, this run "
                           f"{record.backbone.precision}: pass the baseline's --precision)")
            continue
        compared += 1
        drifts += compare(record, base, tolerances, unstable)
    lines = [f"scopebench regression against {baseline_dir}: {compared} records compared"]
    if missing:
        lines.append(f"no baseline for {', '.join(missing)}; make one with --baseline DIR --update-baseline")
    if drifts:
        table = [[d.record, d.quantity, _fmt(d.baseline), _fmt(d.now), _fmt(d.delta), _fmt(d.tolerance)]
                 for d in drifts]
        lines.append(tabulate(table, headers=["record", "quantity", "baseline", "now", "delta", "tolerance"],
                              disable_numparse=True))
    passed = not drifts and not missing and compared > 0
    lines.append("regression: PASS" if passed else f"regression: FAIL ({len(drifts)} drifts)")
    return passed, "\n".join(lines)


def _fmt(value: float | str) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _read_tolerances(baseline_dir: Path) -> tuple[dict[str, Any], frozenset[str]]:
    """The baseline's tolerance per quantity and the verdicts its seeds disagreed on."""
    path = Path(baseline_dir) / TOLERANCES_FILE
    if not path.is_file():
        return {}, frozenset()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return dict(data["quantities"]), frozenset(data.get("unstable_verdicts", ()))
    except (ValueError, KeyError, TypeError) as err:
        raise ResultFileError(f"{path}: not a tolerances file ({err}); write it with `scopebench tolerances`") from None


def run_regression(pending: Iterable[Any], results_dir: Path, baseline_dir: Path, *, update: bool
                   ) -> tuple[bool, str]:
    """The bench's regression step over the records this session wrote (read back from ``results_dir``)."""
    records = [load_result(result_path(results_dir, p.backbone.name, p.sae.name if p.sae else None)) for p in pending]
    if update:
        for record in records:
            target = result_path(baseline_dir, record.backbone.name, record.sae.name if record.sae else None)
            write_result(record, target)
        return True, f"scopebench: baseline {baseline_dir} updated with {len(records)} records"
    return compare_dirs(records, baseline_dir)


def tolerance_table(tolerances: dict[str, Any]) -> str:
    """The Markdown table of a tolerances file (docs/regression.md): quantity, measured spread, tolerance."""
    rows = [[f"`{key}`", f"{entry['spread']:.3g}", f"{entry['tolerance']:.3g}"]
            for key, entry in sorted(tolerances["quantities"].items())]
    return tabulate(rows, headers=["record / analysis / quantity", "seed spread", "tolerance"], tablefmt="github",
                    disable_numparse=True)
