"""Atomic writes leave files with the mode a plain open() would give under the user's umask."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from scopebench.atomic import atomic_folder, write_text_atomic


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_files_and_folders_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """mkstemp/mkdtemp create 0600/0700 whatever the umask; shared caches and result folders need group access."""
    path = write_text_atomic(tmp_path / "a.json", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    with atomic_folder(tmp_path / "entry") as folder:
        (folder / "x").write_text("1")
    assert stat.S_IMODE((tmp_path / "entry").stat().st_mode) == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "entry"]
