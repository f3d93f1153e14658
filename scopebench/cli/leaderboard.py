"""``scopebench leaderboard``: render the result files as a table, or write them as Markdown, HTML or CSV.

``--results-dir`` is the pytest plugin's option (one row of :data:`scopebench.plugin.options.OPTIONS`),
with the same rule: without it, ``leaderboard/results`` in the project root, found from the current
folder as pytest finds its rootdir (:func:`~scopebench.plugin.options.project_root`), so the command
reads the folder a ``pytest bench`` run from the same place wrote.

``scopebench.results.leaderboard`` reads the backbone registry (torch, timm): it is imported when the command
runs, not when the parser is built.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scopebench.plugin.options import add_cli_options, default_results_dir, project_root


#: file options, in the order they are written: option -> (its Namespace attribute, an example path)
TARGETS = {"--write": ("write", "leaderboard/LEADERBOARD.md"), "--html": ("html", "leaderboard/leaderboard.html"),
           "--csv": ("csv", "leaderboard/leaderboard.csv")}


def _unwritable(target: Path, example: str) -> str | None:
    """Why the leaderboard cannot be written to ``target`` (checked before any rendering), or None."""
    if target.is_dir():
        return f"is a folder; give a file path such as {example}"
    existing = next(p for p in target.resolve().parents if p.exists())
    if not existing.is_dir():
        return f"lies under {existing}, which is a file; give a path in a folder"
    return None


def _write_targets(args: argparse.Namespace, results_dir: Path) -> None:
    """Write every file asked for (--write, --html, --csv), each atomically, saying where."""
    from scopebench.results.html import write_html
    from scopebench.results.leaderboard import write_csv, write_leaderboard

    writers = {"write": write_leaderboard, "html": write_html, "csv": write_csv}
    count = len(list(results_dir.glob("*.json")))
    for attribute, _ in TARGETS.values():
        if (target := getattr(args, attribute)) is not None:
            print(f"wrote {writers[attribute](results_dir, target)} ({count} result files from {results_dir})")


def _run(args: argparse.Namespace) -> int:
    from scopebench.results.leaderboard import build_frame, load_results, render_markdown, render_text
    from scopebench.results.records import ResultFileError

    results_dir: Path = args.results_dir if args.results_dir is not None else default_results_dir(
        project_root(Path.cwd()))
    for option, (attribute, example) in TARGETS.items():
        target = getattr(args, attribute)
        if target is not None and (problem := _unwritable(target, example)):
            print(f"error: {option} {target}: {problem}", file=sys.stderr)
            return 2
    if not results_dir.is_dir():
        print(f"error: no results folder at {results_dir}; run inside the project whose bench wrote the "
              "results or pass --results-dir PATH", file=sys.stderr)
        return 2
    try:
        if any(getattr(args, attribute) is not None for attribute, _ in TARGETS.values()):
            _write_targets(args, results_dir)
            return 0
        frame = build_frame(load_results(results_dir))
    except ResultFileError as exc:
        print(f"error: bad result file: {exc}", file=sys.stderr)
        return 2
    print(render_markdown(frame) if args.markdown else render_text(frame, width=args.width or 10**9))
    return 0


def register_leaderboard(subparsers: argparse._SubParsersAction) -> None:
    """``scopebench leaderboard [--results-dir DIR] [--write PATH] [--html PATH] [--csv PATH] [--markdown]``."""
    parser = subparsers.add_parser(
        "leaderboard", help="render the leaderboard from result files (terminal table, Markdown, HTML or CSV)",
        description="Render every result file (one per backbone x SAE) as one leaderboard table. "
                    "Exit 2 if a result file is not valid JSON or does not match the result schema.")
    add_cli_options(parser, "--results-dir")
    parser.add_argument("--write", type=Path, default=None, metavar="PATH",
                        help="write the Markdown leaderboard to PATH atomically, e.g. leaderboard/LEADERBOARD.md")
    parser.add_argument("--html", type=Path, default=None, metavar="PATH",
                        help="write the leaderboard as one self-contained HTML page (sortable tables, plots; works "
                             "offline) to PATH atomically, e.g. leaderboard/leaderboard.html")
    parser.add_argument("--csv", type=Path, default=None, metavar="PATH",
                        help="write the leaderboard rows (all backbones) as CSV to PATH atomically, "
                             "e.g. leaderboard/leaderboard.csv")
    parser.add_argument("--markdown", action="store_true", help="print Markdown instead of a plain-text table")
    parser.add_argument("--width", type=int, default=120, metavar="N",
                        help="split the text table into blocks of at most N characters (0: one wide table)")
    parser.set_defaults(handler=_run)
