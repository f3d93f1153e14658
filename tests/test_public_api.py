"""The public API: every advertised name resolves, and importing the package imports no torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

import scopebench


@pytest.mark.parametrize("name", scopebench.__all__)
def test_every_public_name_resolves_to_its_home(name: str) -> None:
    value = getattr(scopebench, name)
    assert value is getattr(__import__(scopebench._EXPORTS[name], fromlist=[name]), name)


def test_an_unknown_name_lists_the_api() -> None:
    with pytest.raises(AttributeError, match="the public API is ANALYSES"):
        scopebench.Workbnch  # noqa: B018


def test_importing_the_package_and_the_cli_parser_imports_no_torch() -> None:
    code = "import sys, scopebench, scopebench.cli.main as m; m.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
