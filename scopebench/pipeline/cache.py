"""Content-addressed on-disk store of activations (format: docs/cache-format.md).

An entry is one folder ``<root>/<key-hash>/`` holding ``meta.json`` and row shards
``shards/<array>-<index>.npy``.  The key hash is the sha256 of the key's canonical JSON,
so every field that changes the numbers (weights, layer, dataset, transform, sampling,
dtype, kind) changes the folder.  Writers hold a file lock on the entry, write each shard
to a temporary name and ``os.replace`` it into place, then rewrite ``meta.json``
atomically; an interrupted writer therefore leaves only whole shards that meta.json
lists, and a later writer resumes at the first shard meta.json does not list.

When every shard is written the entry is sealed (:mod:`scopebench.pipeline.sealed`): ``seal.json``
lists meta.json and every shard with its sha256 and size, written last.  An entry is complete
only once sealed; one whose writer stopped before sealing it is re-verified and sealed by the
next extraction, never read.

Readers never trust a file silently: meta.json is validated and checked against the seal,
each shard's size and ``.npy`` header are checked when the entry is opened, and its sha256
when it is first read (lazily, so opening a large entry stays cheap).  Any mismatch raises
:class:`CacheCorrupted` naming the file and the fix.  An entry that ``scopebench cache
clear`` removes while it is being read raises :class:`CacheMissing` ("removed while
reading"), never CacheCorrupted.

The same root also holds derived artefacts, each a sealed folder ``<root>/<dir>/<sha256 of
its key>/`` (trained SAEs under ``saes/``, analysis memos under ``analyses/``), used through
:meth:`ActivationStore.artefact`: an unsealed folder is rebuilt, a seal that does not match
its files raises CacheCorrupted.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from filelock import FileLock

from scopebench.atomic import atomic_write, write_json_atomic
from scopebench.precision import DEFAULT_PRECISION, check_precision, with_precision
from scopebench.pipeline.sealed import (SEAL_NAME, FileDigest, Seal, SealBroken, check_file, read_seal, safe_relative,
                               sha256_file, write_seal)

FORMAT_VERSION = 1
META_NAME = "meta.json"
SHARD_DIR = "shards"
LOCK_NAME = "entry.lock"
SUPPORTED_DTYPES = ("float32", "float16", "int64")
CACHE_ENV = "SCOPEBENCH_CACHE"
TOKENS = "tokens"  # the artefact kind of an activation entry (its key's ``kind`` says which arrays)
ARTEFACT_DIRS = {"sae": "saes", "memo": "analyses"}  # derived artefact kind -> folder under the root
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ARRAY_NAME = re.compile(r"[A-Za-z0-9_]+")
# written by scopebench before artefacts were sealed; listed and cleared, never read
_LEGACY = {"sae": re.compile(r".+-[0-9a-f]{16}"), "memo": re.compile(r"attention-emd-[0-9a-f]{16}\.json")}


def default_cache_dir() -> Path:
    """``$SCOPEBENCH_CACHE`` if set, else ``~/.cache/scopebench``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scopebench"


def _package_version() -> str:
    try:
        return metadata.version("scopebench")
    except metadata.PackageNotFoundError:
        return "unknown"


class CacheError(Exception):
    """Base class of activation-cache errors."""


class CacheCorrupted(CacheError):
    """A cache file is missing, truncated, altered or malformed; never read such data."""

    def __init__(self, path: Path, problem: str, root: Path | None = None):
        self.path = Path(path)
        self.problem = problem
        where = f" --cache-dir {root}" if root is not None else ""
        entry = _entry_hash_of(self.path)
        target = f" {entry[:12]}" if entry else ""
        super().__init__(
            f"corrupted scopebench cache file {self.path}: {problem}. "
            f"Run `scopebench cache verify{where}` to list bad entries and "
            f"`scopebench cache clear{target}{where}` to delete this entry, then re-run to rebuild it."
        )


class CacheIncomplete(CacheError):
    """The entry exists but its writer has not finished (crashed, or still running)."""


class CacheMissing(CacheError, KeyError):
    """No such entry, or it was removed (``scopebench cache clear``) while being read."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _entry_hash_of(path: Path) -> str | None:
    for part in reversed(Path(path).parts):
        if _HEX64.fullmatch(part):
            return part
    return None


def _identity(folder: Path) -> tuple[int, ...] | None:
    """Identity of the entry folder, None when it does not exist: tells a removed or replaced entry apart.

    The folder's inode alone is not enough (a folder recreated after a clear may get the same
    number), so the seal file's inode and mtime are part of it: a sealed entry never rewrites it.
    """
    try:
        stat = os.stat(folder)
    except OSError:
        return None
    try:
        seal = os.stat(folder / SEAL_NAME)
        sealed: tuple[int, ...] = (seal.st_ino, seal.st_mtime_ns, seal.st_size)
    except OSError:
        sealed = ()
    return (stat.st_dev, stat.st_ino, *sealed)


def _removed(folder: Path, identity: tuple[int, ...] | None, root: Path | None) -> CacheMissing | None:
    """The error to raise when ``folder`` no longer is the folder that was opened (cleared meanwhile)."""
    if identity is not None and _identity(folder) == identity:
        return None
    where = f" under {root}" if root is not None else ""
    return CacheMissing(f"cache entry {folder.name[:12]}{where} was removed while reading it (by `scopebench cache "
                        f"clear`?); nothing is wrong with the cache: re-run to extract or rebuild it")


def _corrupted(err: SealBroken, root: Path | None) -> CacheCorrupted:
    return CacheCorrupted(err.path, err.problem, root)


def canonical_json(data: Any) -> str:
    """Sorted, compact, ASCII JSON: what key hashes are taken of."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class CacheKey:
    """Everything that determines the cached numbers; its hash names the entry folder."""

    kind: str  # what is stored: "tokens", "scc-s1", ...
    backbone: str  # registry name
    weights_id: str  # identity of the loaded weights
    layer: int  # 0-based designated block
    dataset: str  # ImageDataset.identity
    transform: str  # how images become model input
    sampling: str  # which dataset items, in which order
    dtype: str  # storage dtype of the activations
    precision: str = DEFAULT_PRECISION  # of the forward pass (scopebench.precision); left out of the hash when fp32

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "layer" and (not isinstance(value, str) or not value):
                raise ValueError(f"CacheKey.{name} must be a non-empty string, got {value!r}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"CacheKey.dtype {self.dtype!r} is not storable; use one of {SUPPORTED_DTYPES}")
        check_precision(self.precision)

    def as_dict(self) -> dict[str, Any]:
        """The key's fields, without ``precision`` when it is the default: fp32 keys (and folders) predate the field."""
        fields = asdict(self)
        precision = fields.pop("precision")
        return with_precision(fields, precision)

    def canonical_json(self) -> str:
        return canonical_json(self.as_dict())

    @property
    def digest(self) -> str:
        """sha256 hex of the canonical JSON: the entry's folder name."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheKey:
        return cls(**data)


def _write_json(final: Path, data: dict[str, Any]) -> None:
    write_json_atomic(final, data, sort_keys=True)


@dataclass(frozen=True)
class ShardRecord:
    """One stored shard file as meta.json lists it."""

    array: str
    index: int
    start: int
    stop: int
    file: str  # relative to the entry folder
    sha256: str
    bytes: int


def _check_shard(entry_dir: Path, record: ShardRecord, row_shape: tuple[int, ...], dtype: str,
                 checksum: bool, root: Path | None) -> Path:
    """Raise CacheCorrupted unless the shard file is exactly what meta.json says."""
    path = entry_dir / record.file
    recorded = FileDigest(sha256=record.sha256, bytes=record.bytes)
    try:
        check_file(path, recorded, checksum=False, what=META_NAME)
    except SealBroken as err:
        raise _corrupted(err, root) from None
    size = record.bytes
    expected_shape = (record.stop - record.start, *row_shape)
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, header_dtype = read_header(handle)
            data_offset = handle.tell()
    except (ValueError, OSError, SyntaxError) as err:
        raise CacheCorrupted(path, f"unreadable .npy header ({err})", root) from None
    if tuple(shape) != expected_shape or fortran or header_dtype != np.dtype(dtype):
        raise CacheCorrupted(path, f"header says shape {tuple(shape)} dtype {header_dtype}, expected "
                                   f"{expected_shape} {dtype}", root)
    if data_offset + math.prod(shape) * header_dtype.itemsize != size:
        raise CacheCorrupted(path, "file length does not match its .npy header (truncated)", root)
    if checksum:
        try:
            check_file(path, recorded, checksum=True, what=META_NAME)
        except SealBroken as err:
            raise _corrupted(err, root) from None
    return path


@dataclass
class EntryMeta:
    """Parsed, validated meta.json of one entry."""

    key: CacheKey
    n_rows: int
    rows_per_shard: int
    arrays: dict[str, dict[str, Any]]  # name -> {"row_shape": [...], "dtype": str}
    shards: list[ShardRecord]
    complete: bool
    created: str
    scopebench_version: str
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_shards(self) -> int:
        return -(-self.n_rows // self.rows_per_shard)

    def shard_range(self, index: int) -> tuple[int, int]:
        start = index * self.rows_per_shard
        return start, min(start + self.rows_per_shard, self.n_rows)

    def done_shards(self) -> set[int]:
        """Shard indices for which every array has a listed file."""
        by_index: dict[int, set[str]] = {}
        for record in self.shards:
            by_index.setdefault(record.index, set()).add(record.array)
        return {i for i, names in by_index.items() if names == set(self.arrays)}

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "key": self.key.as_dict(),
            "key_hash": self.key.digest,
            "n_rows": self.n_rows,
            "rows_per_shard": self.rows_per_shard,
            "arrays": self.arrays,
            "shards": [asdict(record) for record in self.shards],
            "complete": self.complete,
            "created": self.created,
            "scopebench_version": self.scopebench_version,
            "attrs": self.attrs,
        }

    @classmethod
    def load(cls, entry_dir: Path, root: Path | None = None) -> EntryMeta:
        """Parse and validate meta.json; CacheCorrupted unless its numbers describe a storable layout.

        Everything is checked against the shards listed (their count, row ranges, file names
        and byte counts) before anything proportional to ``n_rows`` could be allocated, so a
        bogus ``n_rows`` or ``dtype`` is reported as corruption, never a MemoryError or TypeError.
        """
        path = entry_dir / META_NAME
        try:
            text = path.read_bytes().decode("utf-8")
        except (FileNotFoundError, NotADirectoryError):
            raise CacheCorrupted(path, "meta.json is missing", root) from None
        except (OSError, UnicodeDecodeError) as err:
            raise CacheCorrupted(path, f"unreadable meta.json ({type(err).__name__}: {err})", root) from None
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("meta.json is not a JSON object")
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {data.get('format_version')!r}, this scopebench reads "
                                 f"{FORMAT_VERSION}")
            meta = cls(
                key=CacheKey.from_dict(data["key"]),
                n_rows=_meta_int(data["n_rows"], "n_rows"),
                rows_per_shard=_meta_int(data["rows_per_shard"], "rows_per_shard"),
                arrays={_array_name(k): {"row_shape": [_meta_int(d, f"{k}.row_shape") for d in _meta_list(
                    v["row_shape"], f"{k}.row_shape")], "dtype": _dtype_name(v["dtype"], k)}
                        for k, v in _meta_dict(data["arrays"], "arrays").items()},
                shards=[_shard_record(record) for record in _meta_list(data["shards"], "shards")],
                complete=_meta_bool(data["complete"], "complete"),
                created=str(data["created"]),
                scopebench_version=str(data["scopebench_version"]),
                attrs=_meta_dict(data.get("attrs", {}), "attrs"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CacheCorrupted(path, f"malformed meta.json ({type(err).__name__}: {err})", root) from None
        if meta.key.digest != entry_dir.name or data.get("key_hash") != entry_dir.name:
            raise CacheCorrupted(path, "the key in meta.json does not hash to the folder name", root)
        if meta.n_rows < 0 or meta.rows_per_shard < 1:
            raise CacheCorrupted(path, "n_rows / rows_per_shard out of range", root)
        seen: set[tuple[str, int]] = set()
        for record in meta.shards:
            if (record.array not in meta.arrays or not 0 <= record.index < meta.n_shards
                    or (record.start, record.stop) != meta.shard_range(record.index)
                    or record.file != _shard_file(record.array, record.index)
                    or (record.array, record.index) in seen):
                raise CacheCorrupted(path, f"shard {record.file} does not fit the entry layout", root)
            seen.add((record.array, record.index))
            spec = meta.arrays[record.array]
            data_bytes = (record.stop - record.start) * math.prod(spec["row_shape"]) * np.dtype(spec["dtype"]).itemsize
            if record.bytes < data_bytes + _NPY_MIN_HEADER:
                raise CacheCorrupted(path, f"shard {record.file} records {record.bytes} bytes, too few for rows "
                                           f"[{record.start}, {record.stop}) of shape {spec['row_shape']} "
                                           f"{spec['dtype']} (n_rows or rows_per_shard altered?)", root)
        if meta.complete and (not meta.arrays or len(meta.shards) != meta.n_shards * len(meta.arrays)):
            raise CacheCorrupted(path, f"marked complete with {meta.n_rows} rows in {meta.n_shards} shards of "
                                       f"{len(meta.arrays)} arrays, but lists {len(meta.shards)} shard files", root)
        return meta


_NPY_MIN_HEADER = 10  # magic string, version and header length of the smallest .npy header


def _shard_file(array: str, index: int) -> str:
    return f"{SHARD_DIR}/{array}-{index:05d}.npy"


def _meta_int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value


def _meta_bool(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return value


def _meta_list(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list, got {type(value).__name__}")
    return value


def _meta_dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object, got {type(value).__name__}")
    return dict(value)


def _array_name(name: Any) -> str:
    if not isinstance(name, str) or not _ARRAY_NAME.fullmatch(name):
        raise ValueError(f"array name {name!r} is not a plain identifier")
    return name


def _dtype_name(value: Any, array: str) -> str:
    """``value`` if it names a plain numeric numpy dtype by its canonical name (as the writer stores it)."""
    try:
        dtype = np.dtype(value) if isinstance(value, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.name != value or dtype.kind not in "biuf" or dtype.fields is not None:
        raise ValueError(f"array {array!r} has dtype {value!r}, not a numeric numpy dtype name")
    return value


def _shard_record(record: Any) -> ShardRecord:
    if not isinstance(record, dict) or set(record) != {f.name for f in fields(ShardRecord)}:
        raise ValueError(f"shard record {record!r} does not have the fields of a shard")
    array, file, sha = record["array"], record["file"], record["sha256"]
    if not isinstance(array, str) or not isinstance(file, str) or not (isinstance(sha, str) and _HEX64.fullmatch(sha)):
        raise ValueError(f"shard record {record!r} has a bad array, file or sha256")
    return ShardRecord(array=array, file=file, sha256=sha, index=_meta_int(record["index"], "shard index"),
                       start=_meta_int(record["start"], "shard start"), stop=_meta_int(record["stop"], "shard stop"),
                       bytes=_meta_int(record["bytes"], "shard bytes"))


class ShardedArray:
    """Read-only view of one array stored as row shards, each memory-mapped from its .npy.

    Indexing the first axis with an int or a slice inside one shard returns a memory-mapped
    view; other indexing gathers rows into a new array.  Each shard's sha256 is checked the
    first time it is touched.  If the entry is removed (``scopebench cache clear``) after it was
    opened, shards already touched keep reading (they are mapped); touching another raises
    :class:`CacheMissing`.
    """

    def __init__(self, name: str, entry_dir: Path, meta: EntryMeta, root: Path | None, checksum: bool = True,
                 identity: tuple[int, ...] | None = None):
        self.name = name
        self._dir = entry_dir
        self._root = root
        self._checksum = checksum
        self._identity = identity if identity is not None else _identity(entry_dir)
        spec = meta.arrays[name]
        self.row_shape = tuple(spec["row_shape"])
        self.dtype = np.dtype(spec["dtype"])
        self.shape = (meta.n_rows, *self.row_shape)
        self._records = sorted((r for r in meta.shards if r.array == name), key=lambda r: r.index)
        self._starts = np.array([r.start for r in self._records], dtype=np.int64)
        self._maps: dict[int, np.ndarray] = {}

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_shards(self) -> int:
        return len(self._records)

    def check_files(self) -> None:
        """Cheap check of every shard (presence, size, header), without reading the data."""
        try:
            for record in self._records:
                _check_shard(self._dir, record, self.row_shape, self.dtype.name,
                             checksum=False, root=self._root)
        except (CacheCorrupted, OSError):
            gone = _removed(self._dir, self._identity, self._root)
            if gone is None:
                raise
            raise gone from None

    def shard(self, position: int) -> np.ndarray:
        """Memory map of the shard at ``position`` (verified on first use)."""
        if position not in self._maps:
            record = self._records[position]
            try:
                path = _check_shard(self._dir, record, self.row_shape, self.dtype.name, self._checksum, self._root)
                self._maps[position] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (CacheCorrupted, OSError):
                gone = _removed(self._dir, self._identity, self._root)
                if gone is None:
                    raise
                raise gone from None
        return self._maps[position]

    def _locate(self, row: int) -> tuple[int, int]:
        position = int(np.searchsorted(self._starts, row, side="right")) - 1
        return position, row - self._records[position].start

    def __getitem__(self, index: Any) -> np.ndarray:
        first, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        n = self.shape[0]
        if isinstance(first, (int, np.integer)):
            row = int(first) + n if first < 0 else int(first)
            if not 0 <= row < n:
                raise IndexError(f"row {first} out of range for {self.name} with {n} rows")
            position, local = self._locate(row)
            return self.shard(position)[(local, *rest)]
        rows = np.arange(*first.indices(n)) if isinstance(first, slice) else np.arange(n)[first]
        if isinstance(first, slice) and rows.size and (first.step in (None, 1)):
            position, local = self._locate(int(rows[0]))
            if position == self._locate(int(rows[-1]))[0]:
                return self.shard(position)[(slice(local, local + rows.size), *rest)]
        positions = np.searchsorted(self._starts, rows, side="right") - 1
        if rest and not isinstance(first, slice) and not isinstance(rest[0], slice):
            return self._paired(rows, positions, np.broadcast_to(np.asarray(rest[0]), rows.shape), rest[1:])
        out = np.empty((rows.size, *self.row_shape), dtype=self.dtype)
        for position in np.unique(positions):
            mask = positions == position
            out[mask] = self.shard(int(position))[rows[mask] - self._records[position].start]
        if not rest:
            return out
        if not isinstance(first, slice) and any(not isinstance(i, slice) and np.ndim(i) > 0 for i in rest):
            # a later index array pairs with the row index, as in numpy (not an outer product)
            return out[(np.arange(rows.size), *rest)]
        return out[(slice(None), *rest)]

    def _paired(self, rows: np.ndarray, positions: np.ndarray, second: np.ndarray, rest: tuple) -> np.ndarray:
        """``array[rows, second]`` with numpy's paired advanced indexing, reading only the chosen cells."""
        out = np.empty((rows.size, *self.row_shape[1:]), dtype=self.dtype)
        for position in np.unique(positions):
            mask = positions == position
            out[mask] = self.shard(int(position))[rows[mask] - self._records[position].start, second[mask]]
        return out[(slice(None), *rest)] if rest else out

    def iter_batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start_row, rows)`` batches along the first axis; they never cross a shard, so no copy."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for position, record in enumerate(self._records):
            shard = self.shard(position)
            for offset in range(0, shard.shape[0], batch_size):
                yield record.start + offset, shard[offset : offset + batch_size]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy is False:
            raise ValueError(f"{self!r} spans shard files: converting it to one ndarray always copies")
        return np.array(self[:], dtype=dtype, copy=True)

    def __repr__(self) -> str:
        return f"ShardedArray({self.name!r}, shape={self.shape}, dtype={self.dtype}, shards={self.n_shards})"


@dataclass
class CacheEntry:
    """A complete entry opened for reading."""

    path: Path
    meta: EntryMeta
    arrays: dict[str, ShardedArray]

    def __getitem__(self, name: str) -> ShardedArray:
        try:
            return self.arrays[name]
        except KeyError:
            raise KeyError(f"entry {self.path.name[:12]} has no array {name!r}; it has {sorted(self.arrays)}") from None


class EntryWriter:
    """Writes the shards of one entry; obtained from :meth:`ActivationStore.writer` (holds the lock)."""

    def __init__(self, entry_dir: Path, meta: EntryMeta, root: Path):
        self._dir = entry_dir
        self.meta = meta
        self._root = root

    @property
    def complete(self) -> bool:
        return self.meta.complete

    def missing_shards(self) -> list[int]:
        """Shard indices still to write, in order (empty when the entry is complete)."""
        done = self.meta.done_shards()
        return [i for i in range(self.meta.n_shards) if i not in done]

    def shard_range(self, index: int) -> tuple[int, int]:
        return self.meta.shard_range(index)

    def write_shard(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Store rows ``shard_range(index)`` of every array, then record them in meta.json."""
        if self.meta.complete:
            raise CacheError(f"entry {self._dir} is complete; it cannot be written again")
        start, stop = self.meta.shard_range(index)
        if not self.meta.arrays:
            self.meta.arrays = {name: {"row_shape": list(a.shape[1:]), "dtype": a.dtype.name}
                                for name, a in arrays.items()}
        for name, array in arrays.items():
            _array_name(name)
            _dtype_name(array.dtype.name, name)
        if set(arrays) != set(self.meta.arrays):
            raise ValueError(f"shard {index} has arrays {sorted(arrays)}, the entry stores {sorted(self.meta.arrays)}")
        records = []
        for name, array in arrays.items():
            spec = self.meta.arrays[name]
            expected = (stop - start, *spec["row_shape"])
            if array.shape != expected or array.dtype.name != spec["dtype"]:
                raise ValueError(f"shard {index} of {name!r} has shape {array.shape} {array.dtype}, "
                                 f"expected {expected} {spec['dtype']}")
            rel = _shard_file(name, index)
            final = self._dir / rel
            atomic_write(final, lambda handle, a=array: np.save(handle, np.ascontiguousarray(a),
                                                                 allow_pickle=False))
            records.append(ShardRecord(array=name, index=index, start=start, stop=stop, file=rel,
                                       sha256=sha256_file(final), bytes=final.stat().st_size))
        kept = [r for r in self.meta.shards if r.index != index]
        self.meta.shards = sorted(kept + records, key=lambda r: (r.index, r.array))
        _write_json(self._dir / META_NAME, self.meta.to_json())

    def adopt_shards(self) -> list[str]:
        """List in meta.json the shards other processes wrote with a :class:`ShardWriter`.

        Each shard's record file is checked against the entry's layout and every array file
        against its sha256 before it is listed; a record that does not verify (a writer killed
        or racing another) is deleted, so its shard counts as missing and is written again.
        Returns what was wrong with each refused record.
        """
        problems: list[str] = []
        done = self.meta.done_shards()
        for path in sorted((self._dir / SHARD_DIR).glob(f"*{_RECORD_SUFFIX}")):
            try:
                records = self._verified_records(path)
            except (CacheCorrupted, ValueError, KeyError, TypeError, OSError) as err:
                problems.append(f"{path.name}: {err}")
                path.unlink(missing_ok=True)
                continue
            if records[0].index not in done:
                kept = [r for r in self.meta.shards if r.index != records[0].index]
                self.meta.shards = sorted(kept + records, key=lambda r: (r.index, r.array))
                _write_json(self._dir / META_NAME, self.meta.to_json())
                done.add(records[0].index)
            path.unlink()
        return problems

    def _verified_records(self, path: Path) -> list[ShardRecord]:
        data = json.loads(path.read_bytes().decode("utf-8"))
        index, arrays = _meta_int(data["index"], "index"), _meta_dict(data["arrays"], "arrays")
        if not index < self.meta.n_shards:
            raise ValueError(f"shard {index} is outside the entry's {self.meta.n_shards} shards")
        layout = {name: {"row_shape": [_meta_int(d, "row_shape") for d in _meta_list(spec["row_shape"], "row_shape")],
                         "dtype": _dtype_name(spec["dtype"], name)} for name, spec in arrays.items()}
        if self.meta.arrays and layout != self.meta.arrays:
            raise ValueError(f"arrays {layout} differ from the entry's {self.meta.arrays}")
        start, stop = self.meta.shard_range(index)
        records = [ShardRecord(array=_array_name(name), index=index, start=start, stop=stop,
                               file=_shard_file(name, index), sha256=str(spec["sha256"]),
                               bytes=_meta_int(spec["bytes"], "bytes")) for name, spec in arrays.items()]
        for record in records:
            _check_shard(self._dir, record, tuple(layout[record.array]["row_shape"]), layout[record.array]["dtype"],
                         True, self._root)
        if not self.meta.arrays:
            self.meta.arrays = layout
        return records

    def finish(self) -> None:
        """Mark the entry complete; every shard must have been written."""
        missing = self.missing_shards()
        if missing:
            raise CacheError(f"cannot finish entry {self._dir}: shards {missing} are not written")
        self.meta.complete = True
        _write_json(self._dir / META_NAME, self.meta.to_json())
        self._seal()

    def _seal(self) -> None:
        """Seal the complete entry: ``seal.json`` over meta.json and every shard, written last."""
        key = self.meta.key
        write_seal(self._dir, TOKENS, [META_NAME, *(r.file for r in self.meta.shards)],
                   info={"backbone": key.backbone, "dataset": key.dataset, "kind": key.kind},
                   known={r.file: FileDigest(sha256=r.sha256, bytes=r.bytes) for r in self.meta.shards})


_RECORD_SUFFIX = ".record.json"


class ShardWriter:
    """Writes shards of an entry whose lock another process holds (a rank of a torchrun launch).

    Rank 0 holds the entry's lock for the whole launch; every rank writes its own shards with a
    ShardWriter: the array files atomically, then ``shards/<index>.record.json`` (their sha256
    and layout), last.  Rank 0 lists them in meta.json with :meth:`EntryWriter.adopt_shards`
    once every rank is done, so meta.json has one writer and a killed rank leaves whole shards
    (adopted by the next launch) or files without a record (written again).
    """

    def __init__(self, entry_dir: Path, n_rows: int, rows_per_shard: int):
        self._dir = entry_dir
        self._n_rows, self._rows_per_shard = n_rows, rows_per_shard

    def shard_range(self, index: int) -> tuple[int, int]:
        start = index * self._rows_per_shard
        return start, min(start + self._rows_per_shard, self._n_rows)

    def write_shard(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        start, stop = self.shard_range(index)
        described = {}
        for name, array in arrays.items():
            _dtype_name(array.dtype.name, _array_name(name))
            if array.shape[0] != stop - start:
                raise ValueError(f"shard {index} of {name!r} has {array.shape[0]} rows, expected {stop - start}")
            final = self._dir / _shard_file(name, index)
            atomic_write(final, lambda handle, a=array: np.save(handle, np.ascontiguousarray(a), allow_pickle=False))
            described[name] = {"row_shape": list(array.shape[1:]), "dtype": array.dtype.name,
                               "sha256": sha256_file(final), "bytes": final.stat().st_size}
        _write_json(self._dir / SHARD_DIR / f"{index:05d}{_RECORD_SUFFIX}", {"index": index, "arrays": described})


@dataclass(frozen=True)
class EntryInfo:
    """Summary of one artefact under the store root (for listing and verifying)."""

    digest: str  # its key: the folder name (sha256 hex of the key; a legacy artefact's own name)
    path: Path
    meta: EntryMeta | None  # token entries only
    problem: str | None  # None when the checks pass
    kind: str = TOKENS  # "tokens" (an activation entry: meta.key.kind says which), "sae" or "memo"
    sealed: bool = False  # a seal vouches for its files (checked as deeply as asked)
    info: dict[str, Any] = field(default_factory=dict)  # a derived artefact's seal info (backbone, name, ...)
    legacy: bool = False  # written before artefacts were sealed: never read (its key changed), only cleared


def _key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(dict(key)).encode("utf-8")).hexdigest()


def _artefact_seal_problem(seal: Seal, kind: str, folder: Path) -> str | None:
    if seal.kind != kind:
        return f"the seal is of a {seal.kind!r} artefact, this folder holds a {kind!r}"
    key = seal.info.get("key")
    if not isinstance(key, dict) or _key_digest(key) != folder.name:
        return "the key in seal.json does not hash to the folder name"
    return None


class ArtefactSlot:
    """One derived artefact's folder (a trained SAE, an analysis memo), held under its lock.

    Obtained from :meth:`ActivationStore.artefact`.  ``sealed`` is True when the folder's seal
    was found and every file it lists matched its sha256: read the payload from ``path``.
    Otherwise (nothing there, or a build that stopped before sealing) build the payload into
    ``path`` and call :meth:`seal` with its files last.
    """

    def __init__(self, kind: str, path: Path, key: dict[str, Any], info: dict[str, Any], root: Path):
        self.kind = kind
        self.path = path
        self.key = key
        self.info = info
        self.root = root
        self.sealed = False
        self._seal: Seal | None = None

    def _open(self) -> None:
        try:
            seal = read_seal(self.path)
            if seal is None:
                return
            problem = _artefact_seal_problem(seal, self.kind, self.path)
            if problem is not None:
                raise CacheCorrupted(self.path / SEAL_NAME, problem, self.root)
            seal.check(checksum=True)
        except SealBroken as err:
            raise _corrupted(err, self.root) from None
        self._seal, self.sealed = seal, True

    def corrupted(self, name: str, problem: str) -> CacheCorrupted:
        """The error for a sealed file whose content this scopebench cannot use."""
        return CacheCorrupted(self.path / name, problem, self.root)

    def read_json(self, name: str) -> Any:
        """A sealed JSON file of this artefact (CacheCorrupted if it does not parse)."""
        if self._seal is None or name not in self._seal.files:
            raise CacheError(f"{self.path / name} is not a sealed file of this artefact")
        try:
            return json.loads((self.path / name).read_bytes().decode("utf-8"))
        except (ValueError, OSError) as err:
            raise self.corrupted(name, f"unreadable JSON ({type(err).__name__}: {err})") from None

    def write_json(self, name: str, data: Any) -> Path:
        """Write one payload file atomically (seal it afterwards with :meth:`seal`)."""
        return write_json_atomic(self.path / safe_relative(name), data, sort_keys=True)

    def seal(self, files: list[str]) -> None:
        """Seal the artefact over ``files`` (relative paths), once all of them are written."""
        self._seal = write_seal(self.path, self.kind, files, info={**self.info, "key": self.key})
        self.sealed = True


class ActivationStore:
    """Content-addressed activation cache rooted at ``root`` (see docs/cache-format.md)."""

    def __init__(self, root: str | os.PathLike[str], lock_timeout: float = -1):
        self.root = Path(root).expanduser()
        self.lock_timeout = lock_timeout

    def path(self, key: CacheKey) -> Path:
        return self.root / key.digest

    def _lock(self, entry_dir: Path, timeout: float | None = None) -> FileLock:
        return FileLock(str(entry_dir / LOCK_NAME), timeout=self.lock_timeout if timeout is None else timeout)

    def status(self, key: CacheKey) -> str:
        """"missing", "incomplete" or "complete" (sealed; raises CacheCorrupted if meta.json is bad)."""
        entry_dir = self.path(key)
        if not (entry_dir / META_NAME).exists():
            return "missing"
        meta = EntryMeta.load(entry_dir, self.root)
        return "complete" if meta.complete and (entry_dir / SEAL_NAME).exists() else "incomplete"

    def read(self, key: CacheKey, checksum: bool = True) -> CacheEntry:
        """Open a complete entry; shard sizes and headers are checked now, checksums on first read.

        Raises :class:`CacheMissing` (a KeyError) when there is no entry, or when it is
        removed while being opened or read.
        """
        entry_dir = self.path(key)
        identity = _identity(entry_dir)
        if identity is None:
            raise CacheMissing(f"no cache entry for key {key.digest[:12]} under {self.root}; extract it first")
        try:
            return self._open(entry_dir, checksum, identity)
        except (CacheCorrupted, CacheIncomplete, OSError):
            gone = _removed(entry_dir, identity, self.root)
            if gone is None:
                raise
            raise gone from None

    def _open(self, entry_dir: Path, checksum: bool, identity: tuple[int, ...]) -> CacheEntry:
        meta = EntryMeta.load(entry_dir, self.root)
        if not meta.complete:
            done, total = len(meta.done_shards()), meta.n_shards
            raise CacheIncomplete(
                f"cache entry {entry_dir} is incomplete ({done} of {total} shards written): its extraction was "
                f"interrupted or is still running. Re-run the extraction to resume it, or delete it with "
                f"`scopebench cache clear {entry_dir.name[:12]} --cache-dir {self.root}`.")
        if self._token_seal(entry_dir, meta) is None:
            raise CacheIncomplete(
                f"cache entry {entry_dir} has all its shards but is not sealed (its writer stopped before sealing "
                f"it, or an older scopebench wrote it). Re-run the extraction to verify and seal it (no forward "
                f"pass), or delete it with `scopebench cache clear {entry_dir.name[:12]} --cache-dir {self.root}`.")
        arrays = {name: ShardedArray(name, entry_dir, meta, self.root, checksum, identity=identity)
                  for name in meta.arrays}
        for array in arrays.values():
            array.check_files()
        return CacheEntry(path=entry_dir, meta=meta, arrays=arrays)

    def _token_seal(self, entry_dir: Path, meta: EntryMeta) -> Seal | None:
        """The entry's seal after checking it vouches for this meta.json (None when unsealed)."""
        path = entry_dir / SEAL_NAME
        try:
            seal = read_seal(entry_dir)
            if seal is None:
                return None
            if seal.kind != TOKENS or META_NAME not in seal.files:
                raise CacheCorrupted(path, f"the seal is of a {seal.kind!r} artefact without meta.json", self.root)
            check_file(entry_dir / META_NAME, seal.files[META_NAME], checksum=True)
        except SealBroken as err:
            raise _corrupted(err, self.root) from None
        listed = {r.file: FileDigest(sha256=r.sha256, bytes=r.bytes) for r in meta.shards}
        sealed = {name: digest for name, digest in seal.files.items() if name != META_NAME}
        if listed != sealed:
            raise CacheCorrupted(path, "seal.json and meta.json disagree about the shard files", self.root)
        return seal

    @contextmanager
    def writer(self, key: CacheKey, n_rows: int, rows_per_shard: int,
               attrs: dict[str, Any] | None = None) -> Iterator[EntryWriter]:
        """Yield an :class:`EntryWriter` for ``key`` while holding the entry's lock.

        A new entry gets ``rows_per_shard``; an existing one keeps its own layout and resumes
        at its first missing shard, after re-verifying the shards already written (and adopting
        those that ranks of a torchrun launch wrote, :class:`ShardWriter`).  A complete
        entry that is not sealed (its writer stopped just before) is re-verified and sealed.
        """
        if n_rows < 1 or rows_per_shard < 1:
            raise ValueError(f"n_rows ({n_rows}) and rows_per_shard ({rows_per_shard}) must be >= 1")
        entry_dir = self.path(key)
        (entry_dir / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        with self._lock(entry_dir):
            if (entry_dir / META_NAME).exists():
                meta = self._resumable_meta(entry_dir, n_rows)
            else:
                meta = EntryMeta(key=key, n_rows=n_rows, rows_per_shard=rows_per_shard, arrays={}, shards=[],
                                 complete=False, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                 scopebench_version=_package_version(), attrs=dict(attrs or {}))
                _write_json(entry_dir / META_NAME, meta.to_json())
            writer = EntryWriter(entry_dir, meta, self.root)
            writer.adopt_shards()  # shards the ranks of an interrupted torchrun launch left
            if meta.complete and not (entry_dir / SEAL_NAME).exists():
                writer._seal()
            yield writer

    def _resumable_meta(self, entry_dir: Path, n_rows: int) -> EntryMeta:
        meta = EntryMeta.load(entry_dir, self.root)
        if meta.complete and (entry_dir / SEAL_NAME).exists():
            return meta
        if meta.n_rows != n_rows:
            raise CacheCorrupted(entry_dir / META_NAME,
                                 f"entry has {meta.n_rows} rows but this extraction writes {n_rows}", self.root)
        for record in meta.shards:
            spec = meta.arrays[record.array]
            _check_shard(entry_dir, record, tuple(spec["row_shape"]), spec["dtype"], True, self.root)
        return meta

    def entries(self) -> list[EntryInfo]:
        """Every token entry folder under the root, with the cheap checks' verdict."""
        return [self._inspect(entry_dir, checksum=False) for entry_dir in self.match()]

    def verify(self, entry_dir: Path) -> EntryInfo:
        """Full check of one artefact folder (token entry, SAE or memo), including every file's sha256."""
        return self.inspect(self._kind_of(entry_dir), entry_dir, checksum=True)

    def _kind_of(self, folder: Path) -> str:
        for kind, sub in ARTEFACT_DIRS.items():
            if folder.parent == self.root / sub:
                return kind
        return TOKENS

    def _inspect(self, entry_dir: Path, checksum: bool) -> EntryInfo:
        try:
            meta = EntryMeta.load(entry_dir, self.root)
        except CacheCorrupted as err:
            return EntryInfo(entry_dir.name, entry_dir, None, str(err))
        try:
            for record in meta.shards:
                spec = meta.arrays[record.array]
                _check_shard(entry_dir, record, tuple(spec["row_shape"]), spec["dtype"], checksum, self.root)
            seal = self._token_seal(entry_dir, meta)
        except CacheCorrupted as err:
            return EntryInfo(entry_dir.name, entry_dir, meta, str(err))
        return EntryInfo(entry_dir.name, entry_dir, meta, None, sealed=seal is not None)

    def inspect(self, kind: str, folder: Path, *, checksum: bool = False) -> EntryInfo:
        """Check one artefact: cheaply (presence, sizes, headers) or with every sha256 (``checksum``)."""
        if kind == TOKENS:
            return self._inspect(folder, checksum)
        name = folder.name
        if not (_HEX64.fullmatch(name) and folder.is_dir()):
            return EntryInfo(name, folder, None, None, kind=kind, legacy=True)
        info: dict[str, Any] = {}
        try:
            seal = read_seal(folder)
            if seal is None:
                return EntryInfo(name, folder, None, None, kind=kind)
            info = dict(seal.info)
            problem = _artefact_seal_problem(seal, kind, folder)
            if problem is not None:
                raise CacheCorrupted(folder / SEAL_NAME, problem, self.root)
            seal.check(checksum=checksum)
        except SealBroken as err:
            return EntryInfo(name, folder, None, str(_corrupted(err, self.root)), kind=kind, info=info)
        except CacheCorrupted as err:
            return EntryInfo(name, folder, None, str(err), kind=kind, info=info)
        return EntryInfo(name, folder, None, None, kind=kind, sealed=True, info=info)

    def match(self, prefix: str = "") -> list[Path]:
        """Token entry folders whose hash starts with ``prefix`` (all when empty)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir()
                      if p.is_dir() and _entry_hash_of(p) == p.name and p.name.startswith(prefix.lower()))

    def find(self, prefix: str = "") -> list[tuple[str, Path]]:
        """``(kind, folder)`` of every artefact whose key starts with ``prefix``: token entries,
        then trained SAEs and analysis memos (legacy unsealed ones included, to be cleared)."""
        found = [(TOKENS, path) for path in self.match(prefix)]
        for kind, sub in ARTEFACT_DIRS.items():
            folder = self.root / sub
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.name.startswith(".") or not path.name.lower().startswith(prefix.lower()):
                    continue
                if (_HEX64.fullmatch(path.name) and path.is_dir()) or _is_legacy(kind, path):
                    found.append((kind, path))
        return found

    def root_state(self) -> str:
        """"missing" (no such folder), "empty", "cache" (holds scopebench artefacts) or "foreign"
        (holds only files that are not scopebench's)."""
        if not self.root.exists():
            return "missing"
        if not self.root.is_dir():
            return "foreign"
        if not any(not p.name.startswith(".") for p in self.root.iterdir()):
            return "empty"
        if self.find() or any((self.root / sub).is_dir() for sub in ARTEFACT_DIRS.values()):
            return "cache"
        return "foreign"

    def artefact_path(self, kind: str, key: Mapping[str, Any]) -> Path:
        """Folder of the derived artefact ``key`` (JSON-able): ``<root>/<dir>/<sha256 of its canonical JSON>``."""
        if kind not in ARTEFACT_DIRS:
            raise ValueError(f"unknown artefact kind {kind!r}; the cache holds {sorted(ARTEFACT_DIRS)}")
        return self.root / ARTEFACT_DIRS[kind] / _key_digest(key)

    @contextmanager
    def artefact(self, kind: str, key: Mapping[str, Any],
                 info: Mapping[str, Any] | None = None) -> Iterator[ArtefactSlot]:
        """Hold the lock of the derived artefact ``key`` and yield its :class:`ArtefactSlot`.

        A sealed folder is verified (every sha256) before it is yielded, so a seal that does
        not match raises CacheCorrupted; a folder without a seal yields ``sealed=False`` and
        is to be rebuilt.  ``info`` (backbone, name, dataset, shape) is recorded in the seal
        for ``scopebench cache ls``.
        """
        folder = self.artefact_path(kind, key)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock(folder):
            folder.mkdir(parents=True, exist_ok=True)  # a clear may have renamed it away before the lock
            slot = ArtefactSlot(kind, folder, dict(key), dict(info or {}), self.root)
            slot._open()
            yield slot

    def remove(self, entry_dir: Path) -> None:
        """Delete one artefact folder; raises ``filelock.Timeout`` if a writer (or an SAE/memo reader) holds it.

        The folder is first renamed out of the namespace (atomic), so no reader ever sees a
        half-deleted entry under its key: a token reader that opens it then gets CacheMissing.
        """
        if entry_dir.is_file():  # a legacy memo file
            entry_dir.unlink()
            return
        doomed = entry_dir.with_name(f".{entry_dir.name}.deleting-{os.getpid()}")
        with self._lock(entry_dir, timeout=0):
            os.replace(entry_dir, doomed)
        shutil.rmtree(doomed)


def _is_legacy(kind: str, path: Path) -> bool:
    if not _LEGACY[kind].fullmatch(path.name):
        return False
    if kind == "memo":
        return path.is_file()
    return path.is_dir() and ((path / "sae").is_dir() or (path / "train_state").is_dir())


__all__ = ["ARTEFACT_DIRS", "CACHE_ENV", "TOKENS", "ActivationStore", "ArtefactSlot", "CacheCorrupted", "CacheEntry",
           "CacheError", "CacheIncomplete", "CacheKey", "CacheMissing", "EntryInfo", "EntryMeta", "EntryWriter",
           "ShardWriter", "ShardedArray", "canonical_json", "default_cache_dir", "sha256_file"]
