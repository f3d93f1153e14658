"""Seals: the one way the cache checksums what it holds (token entries, trained SAEs, memos).

Why: every artefact in the cache is written in several steps (shards, then metadata; a
checkpoint folder, then its loss log; an analysis result), and is then trusted by later
sessions that never recompute it.  A seal is a small manifest, ``seal.json`` in the
artefact's folder, listing each payload file's sha256 and size.  It is written atomically
and *last*, after every payload file is in place, so:

- a folder without a seal is unfinished (its writer crashed, or is still running): it is
  rebuilt, never read;
- a folder whose seal does not match its files was altered after it was written: it is
  reported as corrupted, never read and never silently rebuilt over.

Files beside the payload that the seal does not list (lock files, resumable training state)
are ignored.  :class:`SealBroken` names the bad file; the cache turns it into its own error
with the fix (``scopebench cache verify`` / ``clear``).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from scopebench.atomic import write_json_atomic

SEAL_NAME = "seal.json"
SEAL_FORMAT = "scopebench-seal"
SEAL_VERSION = 1
_CHUNK = 1 << 22
_HEX64 = re.compile(r"[0-9a-f]{64}")


class SealBroken(Exception):
    """A sealed file (or the seal itself) is missing, malformed or does not match its record."""

    def __init__(self, path: Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class FileDigest:
    """What a seal records of one file."""

    sha256: str
    bytes: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_file(path: Path) -> FileDigest:
    return FileDigest(sha256=sha256_file(path), bytes=Path(path).stat().st_size)


def check_file(path: Path, expected: FileDigest, *, checksum: bool = True, what: str = SEAL_NAME) -> None:
    """Raise :class:`SealBroken` unless ``path`` exists with the recorded size (and sha256)."""
    if not path.is_file():
        raise SealBroken(path, f"file listed in {what} is missing")
    size = path.stat().st_size
    if size != expected.bytes:
        raise SealBroken(path, f"size is {size} bytes, {what} records {expected.bytes} (truncated or altered)")
    if checksum and sha256_file(path) != expected.sha256:
        raise SealBroken(path, f"sha256 does not match {what} (bytes changed on disk)")


def safe_relative(name: object) -> str:
    """``name`` if it is a plain relative POSIX path inside its folder (no ``..``, not absolute), else ValueError."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"file name {name!r} is not a non-empty string")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in parts) \
            or PurePosixPath(*parts).as_posix() != name:
        raise ValueError(f"file name {name!r} is not a plain relative path inside the folder")
    return name


@dataclass(frozen=True)
class Seal:
    """A parsed ``seal.json``: which kind of artefact, free-form info, and the files it vouches for."""

    folder: Path
    kind: str
    info: dict[str, Any]
    files: dict[str, FileDigest]
    sealed: str

    def check(self, *, checksum: bool = True) -> None:
        """Every listed file exists with its size (and sha256 when ``checksum``); else SealBroken."""
        for name, expected in self.files.items():
            check_file(self.folder / name, expected, checksum=checksum)


def write_seal(folder: Path, kind: str, files: Iterable[str], info: Mapping[str, Any] | None = None,
               known: Mapping[str, FileDigest] | None = None) -> Seal:
    """Seal ``folder``: record each of ``files`` (relative paths), then write ``seal.json`` atomically.

    ``known`` gives digests already computed when the file was written (not re-hashed);
    call this only once every payload file is in its final place.
    """
    folder = Path(folder)
    known = dict(known or {})
    records: dict[str, FileDigest] = {}
    for name in files:
        safe_relative(name)
        if name == SEAL_NAME:
            raise ValueError("a seal cannot list itself")
        path = folder / name
        if name in known:
            check_file(path, known[name], checksum=False, what="the writer's record")
            records[name] = known[name]
        else:
            records[name] = digest_file(path)
    if not records:
        raise ValueError(f"nothing to seal in {folder}")
    sealed = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data = {"format": SEAL_FORMAT, "version": SEAL_VERSION, "kind": kind, "info": dict(info or {}),
            "sealed": sealed, "files": {name: {"sha256": d.sha256, "bytes": d.bytes} for name, d in records.items()}}
    write_json_atomic(folder / SEAL_NAME, data, sort_keys=True)
    return Seal(folder=folder, kind=kind, info=dict(info or {}), files=records, sealed=sealed)


def read_seal(folder: Path) -> Seal | None:
    """The folder's seal, None when it has none (unfinished); SealBroken when ``seal.json`` is malformed."""
    path = Path(folder) / SEAL_NAME
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise SealBroken(path, f"unreadable seal ({type(err).__name__}: {err})") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != SEAL_FORMAT:
            raise ValueError("not a scopebench seal")
        if data.get("version") != SEAL_VERSION:
            raise ValueError(f"seal version {data.get('version')!r}, this scopebench reads {SEAL_VERSION}")
        kind, info, files = data["kind"], data["info"], data["files"]
        if not isinstance(kind, str) or not isinstance(info, dict) or not isinstance(files, dict) or not files:
            raise ValueError("kind, info or files has the wrong type")
        records = {}
        for name, record in files.items():
            safe_relative(name)
            sha, size = record["sha256"], record["bytes"]
            if not (isinstance(sha, str) and _HEX64.fullmatch(sha)) or type(size) is not int or size < 0:
                raise ValueError(f"bad record for {name!r}")
            records[name] = FileDigest(sha256=sha, bytes=size)
        return Seal(folder=Path(folder), kind=kind, info=info, files=records, sealed=str(data.get("sealed", "")))
    except (ValueError, KeyError, TypeError) as err:
        raise SealBroken(path, f"malformed seal ({type(err).__name__}: {err})") from None


__all__ = ["SEAL_NAME", "FileDigest", "Seal", "SealBroken", "check_file", "digest_file", "read_seal",
           "safe_relative", "sha256_file", "write_seal"]
