"""Atomic writes: a crash never leaves a half-written file or folder that reads as valid.

Every file the suite writes (cache shards and metadata, SAE checkpoints, result files,
plots) goes through :func:`atomic_write`: a temporary file in the same folder, flushed
and fsynced, then renamed over the target, and the folder entry fsynced.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


_UMASK_LOCK = threading.Lock()


def _fsync_folder(folder: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process umask: from /proc on Linux, else by setting and restoring it (POSIX has no getter;
    the swap briefly affects other threads, hence /proc first)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def _as_created(path: str | Path, mode: int) -> None:
    """Give a mkstemp/mkdtemp result (always 0600/0700) the mode ``open``/``mkdir`` would under the umask."""
    os.chmod(path, mode & ~_umask())


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a binary temp file beside ``path``, then rename it over ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        _as_created(tmp, 0o666)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(final.parent)
    return final


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    payload = text.encode("utf-8")
    return atomic_write(path, lambda handle: handle.write(payload))


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, sort_keys: bool = False) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys) + "\n")


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` by renames only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        _as_created(tmp, 0o777)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.parent / f".{path.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def write_folder_atomic(path: Path, writers: dict[str, Callable[[Path], None]]) -> None:
    """Create ``path`` holding one file per ``name -> writer(file_path)``, atomically."""
    with atomic_folder(path) as tmp:
        for name, write in writers.items():
            write(tmp / name)
