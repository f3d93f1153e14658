"""``scopebench submit CHECKPOINT --backbone NAME --name NAME``: evaluate an SAE on every case and add it to the
leaderboard.

It runs the claims suite (``bench/`` of this checkout) through pytest with ``--sae BACKBONE/NAME=CHECKPOINT``
and no baseline recipes, in leaderboard mode (the SAE's claims are scored, not asserted), then
re-renders the leaderboard beside the results folder: LEADERBOARD.md, leaderboard.csv, leaderboard.html. The checkpoint may be any format ``load_sae`` reads (native, SAELens,
dictionary_learning, overcomplete) or a ``module:Class`` spec file. A name already taken by another
model is refused unless ``--replace``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from scopebench.plugin.options import add_cli_options, project_root


def pytest_command(args: argparse.Namespace, bench_dir: Path) -> list[str]:
    """The pytest call that evaluates the submission (exposed for tests and for people who want to run it)."""
    command = [sys.executable, "-m", "pytest", str(bench_dir), "--ignore", str(bench_dir / "perf"), "-q",
               "-k", f"{args.backbone}-{args.name}", "--sae", f"{args.backbone}/{args.name}={args.checkpoint}",
               "--sae-recipes", "", "--paper-sae", "", "--no-progress"]
    for flag in ("weights", "weights_config", "data_root", "cache_dir", "results_dir", "device", "scale"):
        value = getattr(args, flag)
        for item in value if isinstance(value, list) else [value]:
            if item not in (None, "auto"):
                command += [f"--{flag.replace('_', '-')}", str(item)]
    if args.replace:
        command.append("--replace")
    return command


def _run(args: argparse.Namespace) -> int:
    from scopebench.names import InvalidName, check_name

    try:
        check_name(args.name, "--name")
    except InvalidName as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.checkpoint.exists():
        print(f"error: no checkpoint at {args.checkpoint}; give an SAE folder or file", file=sys.stderr)
        return 2
    bench_dir = project_root(Path.cwd()) / "bench"
    if not (bench_dir / "test_table6_reconstruction.py").is_file():
        print(f"error: no claims suite at {bench_dir}; run `scopebench submit` from a scopebench checkout",
              file=sys.stderr)
        return 2
    done = subprocess.run(pytest_command(args, bench_dir), check=False)
    if done.returncode != 0:
        print(f"scopebench submit: the evaluation failed (pytest exit {done.returncode}); nothing was added",
              file=sys.stderr)
        return 1
    results = args.results_dir or project_root(Path.cwd()) / "leaderboard" / "results"
    board_dir = Path(results).parent
    board = subprocess.run([sys.executable, "-m", "scopebench.cli.main", "leaderboard", "--results-dir", str(results),
                            "--write", str(board_dir / "LEADERBOARD.md"), "--csv", str(board_dir / "leaderboard.csv"),
                            "--html", str(board_dir / "leaderboard.html")], check=False)
    return board.returncode


def register_submit(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("submit", help="evaluate an SAE checkpoint on every case of a backbone and "
                                                  "add it to the leaderboard")
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    parser.add_argument("--backbone", required=True, help="registry backbone it was trained on")
    parser.add_argument("--name", required=True, help="its leaderboard name (see README: the name rule)")
    add_cli_options(parser, "--weights", "--weights-config", "--data-root", "--cache-dir", "--results-dir",
                    "--device", "--scale", "--replace")
    parser.set_defaults(handler=_run)
