"""Each claim's verdict and margin over several seeds of the same bench run (``make bench-seeds``).

``python bench/seed_margins.py [--markdown FILE] RUN_DIR [RUN_DIR ...]``: every ``RUN_DIR`` holds the result
files of one ``pytest bench -k planted --seed N`` run.  Prints one row per claim that fits a 120-column terminal
(three seeds): the margin at each seed (how far the verdict is from flipping, in the unit of the claim's first
quantity; ``*`` marks a failed verdict), the smallest margin, and whether the claim held at every seed (a
failure of a claim the registry records as a known planted miss is named so).  ``--markdown`` also writes the
README's table, which adds each claim's relation and the values measured in the first run.  Exits 1 when an
asserted claim failed at a seed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from scopebench.atomic import write_text_atomic
from scopebench.claims.registry import CLAIMS_BY_ID, is_known_miss
from scopebench.cli.claims import relation_text
from scopebench.results.records import load_result


def _values(measured: dict[str, float | None]) -> str:
    """The measured values of a verdict, compactly (an indexed relation: its first and last index)."""
    keys = list(measured) if len(measured) <= 2 else [next(iter(measured)), list(measured)[-1]]
    text = ", ".join(f"{k}={'nan' if measured[k] is None else format(measured[k], '.4g')}" for k in keys)
    return text if len(measured) <= 2 else f"{text} ({len(measured)} values)"


Verdicts = dict[tuple[str, str], tuple[bool, bool, float | None, str, bool]]


def _verdicts(run: Path) -> Verdicts:
    """``(result file stem, claim id) -> (passed, asserted, margin, measured values, known miss)`` of one run's
    result files."""
    found = {}
    for path in sorted(run.glob("*.json")):
        record = load_result(path)
        for claim_id, verdict in record.claims.items():
            known = is_known_miss(claim_id, record.backbone.name, record.sae_architecture)
            found[(path.stem, claim_id)] = (verdict.passed, verdict.asserted, verdict.margin,
                                            _values(verdict.measured), known)
    return found


def _rows(runs: dict[str, Verdicts]) -> tuple[list[dict[str, str]], bool]:
    """One row per (result file, claim) seen in any run, and whether every asserted verdict held."""
    keys = sorted({key for verdicts in runs.values() for key in verdicts})
    rows, all_held = [], True
    first = next(iter(runs))
    for key in keys:
        row, margins, held, known = {"result": key[0], "claim": key[1]}, [], True, False
        claim = CLAIMS_BY_ID.get(key[1])
        row["relation"] = "–" if claim is None else relation_text(claim)
        row[f"measured ({first})"] = runs[first][key][3] if key in runs[first] else "–"
        for run, verdicts in runs.items():
            if key not in verdicts:
                row[f"margin {run}"] = "–"
                continue
            passed, asserted, margin, _, known_miss = verdicts[key]
            held &= passed
            known |= known_miss
            all_held &= passed or not asserted
            row[f"margin {run}"] = "nan" if margin is None else f"{margin:.4g}{'' if passed else '*'}"
            if margin is not None:
                margins.append(margin)
        row["min margin"] = f"{min(margins):.4g}" if margins else "–"
        row["held at every seed"] = "yes" if held else ("known planted miss" if known else "NO")
        rows.append(row)
    return rows, all_held


def render(runs: dict[str, Verdicts]) -> tuple[str, str, bool]:
    """The terminal table, the Markdown table (with relations and measured values), and whether every asserted
    verdict held."""
    rows, all_held = _rows(runs)
    markdown = tabulate([list(row.values()) for row in rows], headers=list(rows[0]) if rows else [],
                        tablefmt="github", disable_numparse=True)
    # the terminal's short names: the seed names head the margin columns, "held" means at every seed
    short = {f"margin {run}": run for run in runs} | {"min margin": "min", "held at every seed": "held"}
    keys = ["result", "claim", *short]
    terminal = tabulate([[row[k].replace("known planted miss", "known miss") for k in keys] for row in rows],
                        headers=[short.get(k, k) for k in keys], tablefmt="simple", disable_numparse=True)
    return f"margin of each claim per seed (held: at every seed)\n{terminal}", markdown, all_held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="result folders of one bench run each (seed-N)")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="also write the Markdown table with each claim's relation and measured values here")
    args = parser.parse_args(argv)
    missing = [str(run) for run in args.runs if not any(run.glob("*.json"))]
    if missing:
        parser.error(f"no result files in {', '.join(missing)}; run the bench with --results-dir there first")
    terminal, markdown, all_held = render({run.name: _verdicts(run) for run in args.runs})
    print(terminal)
    if args.markdown:
        written = write_text_atomic(args.markdown, markdown + "\n")
        print(f"the table with each claim's relation and measured values, in Markdown: {written}")
    return 0 if all_held else 1


if __name__ == "__main__":
    sys.exit(main())
