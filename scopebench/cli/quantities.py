"""``scopebench quantities``: every measured quantity (analysis, name, unit, meaning) as a Markdown table."""
from __future__ import annotations

import argparse


def _run(args: argparse.Namespace) -> int:
    from scopebench.results.records import quantity_table

    print(quantity_table())
    return 0


def register_quantities(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("quantities", help="list every measured quantity with its analysis and unit "
                                                      "(the table of docs/results-schema.md)")
    parser.set_defaults(handler=_run)
