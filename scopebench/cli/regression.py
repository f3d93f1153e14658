"""``scopebench compare NEW BASE`` (regression check of result folders) and ``scopebench tolerances``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _records(folder: Path):
    from scopebench.results.leaderboard import load_results

    return load_results(folder)


def _compare(args: argparse.Namespace) -> int:
    from scopebench.results.records import ResultFileError
    from scopebench.results.regression import compare_dirs

    for folder in (args.new, args.base):
        if not folder.is_dir():
            print(f"error: no results folder at {folder}", file=sys.stderr)
            return 2
    try:
        passed, report = compare_dirs(_records(args.new), args.base)
    except ResultFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0 if passed else 1


def _tolerances(args: argparse.Namespace) -> int:
    from scopebench.atomic import write_text_atomic
    from scopebench.results.regression import spread_tolerances, tolerance_table

    if len(args.seed_dirs) < 2:
        print("error: give the results folders of at least two seeds (the first is the reference)", file=sys.stderr)
        return 2
    earlier = None
    if args.keep is not None:
        try:
            earlier = json.loads(args.keep.read_text(encoding="utf-8"))
            if not isinstance(earlier.get("quantities"), dict) or not isinstance(earlier.get("seeds"), int):
                raise ValueError("no 'quantities' object or 'seeds' count")
        except (OSError, ValueError, AttributeError) as exc:
            print(f"error: --keep {args.keep}: not a tolerances file ({exc}); give a meta/tolerances.json that "
                  "scopebench tolerances wrote", file=sys.stderr)
            return 2
    data = spread_tolerances([_records(folder) for folder in args.seed_dirs], earlier)
    write_text_atomic(args.out, json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}: tolerances of {len(data['quantities'])} quantities from {len(args.seed_dirs)} seeds")
    print(tolerance_table(data))
    return 0


def register_regression(subparsers: argparse._SubParsersAction) -> None:
    compare = subparsers.add_parser("compare", help="regression check: every quantity and claim verdict of the "
                                                    "result files in NEW against those in BASE (exit 1 on drift)")
    compare.add_argument("new", type=Path, metavar="NEW")
    compare.add_argument("base", type=Path, metavar="BASE", help="a baseline folder (result files + meta/tolerances.json)")
    compare.set_defaults(handler=_compare)
    tolerances = subparsers.add_parser("tolerances", help="write a baseline's meta/tolerances.json from the result "
                                                          "folders of runs that differ only in --seed")
    tolerances.add_argument("seed_dirs", type=Path, nargs="+", metavar="SEED_DIR")
    tolerances.add_argument("--out", type=Path, required=True, metavar="FILE")
    tolerances.add_argument("--keep", type=Path, metavar="FILE",
                            help="an earlier tolerances file: keep its larger tolerances and unstable verdicts")
    tolerances.set_defaults(handler=_tolerances)
