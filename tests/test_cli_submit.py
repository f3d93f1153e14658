"""``scopebench submit``: the pytest run it starts, and the checks before it starts anything."""
from __future__ import annotations

import argparse
from pathlib import Path

from scopebench.cli.main import build_parser, main
from scopebench.cli.submit import pytest_command


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["submit", *argv])


def test_the_submission_runs_every_case_of_its_backbone_for_that_sae_only(tmp_path: Path) -> None:
    args = _args(str(tmp_path), "--backbone", "clip-b16", "--name", "my-sae", "--weights", "clip-b16=/m/clip.bin",
                 "--data-root", "/data", "--replace")
    command = pytest_command(args, tmp_path / "bench")
    assert command[command.index("-k") + 1] == "clip-b16-my-sae"  # its cases, no backbone-only or other SAE cases
    assert command[command.index("--sae") + 1] == f"clip-b16/my-sae={tmp_path}"
    assert command[command.index("--sae-recipes") + 1] == "" and command[command.index("--paper-sae") + 1] == ""
    assert ["--weights", "clip-b16=/m/clip.bin"] == command[command.index("--weights"):command.index("--weights") + 2]
    assert "--data-root" in command and command[-1] == "--replace"
    assert "--device" not in command  # auto stays the default


def test_bad_submissions_are_refused_before_anything_runs(tmp_path: Path, capsys) -> None:
    assert main(["submit", str(tmp_path), "--backbone", "planted", "--name", "my sae"]) == 2
    assert "names must be" in capsys.readouterr().err
    assert main(["submit", str(tmp_path / "missing"), "--backbone", "planted", "--name", "mine"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
