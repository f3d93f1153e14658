"""Content-addressed on-disk store of activations (format: docs/cache-format.md).

An entry is one folder ``<root>/<key-hash>/`` holding ``meta.json`` and row shards
``shards/<array>-<index>.npy``.  The key hash is the sha256 of the key's canonical JSON,
so every field that changes the numbers (weights, layer, dataset, transform, sampling,
dtype, kind) changes the folder.  Writers hold a file lock on the entry, write each shard
to a temporary name and ``os.replace`` it into place, then rewrite ``meta.json``
atomically; an interrupted writer therefore leaves only whole shards that meta.json
lists, and a later writer resumes at the first shard meta.json does not list.

Readers never trust a file silently: meta.json is validated, each shard's size and
``.npy`` header are checked when the entry is opened, and its sha256 when it is first
read (lazily, so opening a large entry stays cheap).  Any mismatch raises
:class:`CacheCorrupted` naming the file and the fix.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from filelock import FileLock

from scopebench.atomic import atomic_write, write_json_atomic

FORMAT_VERSION = 1
META_NAME = "meta.json"
SHARD_DIR = "shards"
LOCK_NAME = "entry.lock"
SUPPORTED_DTYPES = ("float32", "float16", "int64")
_HASH_CHUNK = 1 << 22
CACHE_ENV = "SCOPEBENCH_CACHE"


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
            f"corrupted activation cache file {self.path}: {problem}. "
            f"Run `scopebench cache verify{where}` to list bad entries and "
            f"`scopebench cache clear{target}{where}` to delete this entry, then re-run the extraction."
        )


class CacheIncomplete(CacheError):
    """The entry exists but its writer has not finished (crashed, or still running)."""


def _entry_hash_of(path: Path) -> str | None:
    for part in reversed(Path(path).parts):
        if len(part) == 64 and all(c in "0123456789abcdef" for c in part):
            return part
    return None


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

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name != "layer" and (not isinstance(value, str) or not value):
                raise ValueError(f"CacheKey.{name} must be a non-empty string, got {value!r}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"CacheKey.dtype {self.dtype!r} is not storable; use one of {SUPPORTED_DTYPES}")

    def canonical_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @property
    def digest(self) -> str:
        """sha256 hex of the canonical JSON: the entry's folder name."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheKey:
        return cls(**data)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
    if not path.is_file():
        raise CacheCorrupted(path, "shard listed in meta.json is missing", root)
    size = path.stat().st_size
    if size != record.bytes:
        raise CacheCorrupted(path, f"size is {size} bytes, meta.json records {record.bytes} (truncated or altered)",
                             root)
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
    if data_offset + int(np.prod(shape)) * header_dtype.itemsize != size:
        raise CacheCorrupted(path, "file length does not match its .npy header (truncated)", root)
    if checksum and sha256_file(path) != record.sha256:
        raise CacheCorrupted(path, "sha256 does not match meta.json (bytes changed on disk)", root)
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
            "key": asdict(self.key),
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
        path = entry_dir / META_NAME
        if not path.is_file():
            raise CacheCorrupted(path, "meta.json is missing", root)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {data.get('format_version')!r}, this scopebench reads "
                                 f"{FORMAT_VERSION}")
            meta = cls(
                key=CacheKey.from_dict(data["key"]),
                n_rows=int(data["n_rows"]),
                rows_per_shard=int(data["rows_per_shard"]),
                arrays={str(k): {"row_shape": [int(d) for d in v["row_shape"]], "dtype": str(v["dtype"])}
                        for k, v in data["arrays"].items()},
                shards=[ShardRecord(**record) for record in data["shards"]],
                complete=bool(data["complete"]),
                created=str(data["created"]),
                scopebench_version=str(data["scopebench_version"]),
                attrs=dict(data.get("attrs", {})),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CacheCorrupted(path, f"malformed meta.json ({type(err).__name__}: {err})", root) from None
        if meta.key.digest != entry_dir.name or data.get("key_hash") != entry_dir.name:
            raise CacheCorrupted(path, "the key in meta.json does not hash to the folder name", root)
        if meta.n_rows < 0 or meta.rows_per_shard < 1:
            raise CacheCorrupted(path, "n_rows / rows_per_shard out of range", root)
        for record in meta.shards:
            if (record.array not in meta.arrays or not 0 <= record.index < meta.n_shards
                    or (record.start, record.stop) != meta.shard_range(record.index)):
                raise CacheCorrupted(path, f"shard {record.file} does not fit the entry layout", root)
        if meta.complete and meta.done_shards() != set(range(meta.n_shards)):
            raise CacheCorrupted(path, "marked complete but shards are missing from the list", root)
        return meta


class ShardedArray:
    """Read-only view of one array stored as row shards, each memory-mapped from its .npy.

    Indexing the first axis with an int or a slice inside one shard returns a memory-mapped
    view; other indexing gathers rows into a new array.  Each shard's sha256 is checked the
    first time it is touched.
    """

    def __init__(self, name: str, entry_dir: Path, meta: EntryMeta, root: Path | None, checksum: bool = True):
        self.name = name
        self._dir = entry_dir
        self._root = root
        self._checksum = checksum
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
        for record in self._records:
            _check_shard(self._dir, record, self.row_shape, self.dtype.name,
                         checksum=False, root=self._root)

    def shard(self, position: int) -> np.ndarray:
        """Memory map of the shard at ``position`` (verified on first use)."""
        if position not in self._maps:
            record = self._records[position]
            path = _check_shard(self._dir, record, self.row_shape, self.dtype.name, self._checksum, self._root)
            self._maps[position] = np.load(path, mmap_mode="r", allow_pickle=False)
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
        rows = np.arange(n)[first]
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
        if set(arrays) != set(self.meta.arrays):
            raise ValueError(f"shard {index} has arrays {sorted(arrays)}, the entry stores {sorted(self.meta.arrays)}")
        records = []
        for name, array in arrays.items():
            spec = self.meta.arrays[name]
            expected = (stop - start, *spec["row_shape"])
            if array.shape != expected or array.dtype.name != spec["dtype"]:
                raise ValueError(f"shard {index} of {name!r} has shape {array.shape} {array.dtype}, "
                                 f"expected {expected} {spec['dtype']}")
            rel = f"{SHARD_DIR}/{name}-{index:05d}.npy"
            final = self._dir / rel
            atomic_write(final, lambda handle, a=array: np.save(handle, np.ascontiguousarray(a),
                                                                 allow_pickle=False))
            records.append(ShardRecord(array=name, index=index, start=start, stop=stop, file=rel,
                                       sha256=sha256_file(final), bytes=final.stat().st_size))
        kept = [r for r in self.meta.shards if r.index != index]
        self.meta.shards = sorted(kept + records, key=lambda r: (r.index, r.array))
        _write_json(self._dir / META_NAME, self.meta.to_json())

    def finish(self) -> None:
        """Mark the entry complete; every shard must have been written."""
        missing = self.missing_shards()
        if missing:
            raise CacheError(f"cannot finish entry {self._dir}: shards {missing} are not written")
        self.meta.complete = True
        _write_json(self._dir / META_NAME, self.meta.to_json())


@dataclass(frozen=True)
class EntryInfo:
    """Summary of one folder under the store root (for listing)."""

    digest: str
    path: Path
    meta: EntryMeta | None
    problem: str | None  # None when the cheap checks pass


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
        """"missing", "incomplete" or "complete" (from meta.json; raises CacheCorrupted if it is bad)."""
        entry_dir = self.path(key)
        if not (entry_dir / META_NAME).exists():
            return "missing"
        return "complete" if EntryMeta.load(entry_dir, self.root).complete else "incomplete"

    def read(self, key: CacheKey, checksum: bool = True) -> CacheEntry:
        """Open a complete entry; shard sizes and headers are checked now, checksums on first read."""
        entry_dir = self.path(key)
        if not entry_dir.exists():
            raise KeyError(f"no cache entry for key {key.digest[:12]} under {self.root}; extract it first")
        meta = EntryMeta.load(entry_dir, self.root)
        if not meta.complete:
            done, total = len(meta.done_shards()), meta.n_shards
            raise CacheIncomplete(
                f"cache entry {entry_dir} is incomplete ({done} of {total} shards written): its extraction was "
                f"interrupted or is still running. Re-run the extraction to resume it, or delete it with "
                f"`scopebench cache clear {entry_dir.name[:12]} --cache-dir {self.root}`.")
        arrays = {name: ShardedArray(name, entry_dir, meta, self.root, checksum) for name in meta.arrays}
        for array in arrays.values():
            array.check_files()
        return CacheEntry(path=entry_dir, meta=meta, arrays=arrays)

    @contextmanager
    def writer(self, key: CacheKey, n_rows: int, rows_per_shard: int,
               attrs: dict[str, Any] | None = None) -> Iterator[EntryWriter]:
        """Yield an :class:`EntryWriter` for ``key`` while holding the entry's lock.

        A new entry gets ``rows_per_shard``; an existing one keeps its own layout and resumes
        at its first missing shard, after re-verifying the shards already written.
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
            yield EntryWriter(entry_dir, meta, self.root)

    def _resumable_meta(self, entry_dir: Path, n_rows: int) -> EntryMeta:
        meta = EntryMeta.load(entry_dir, self.root)
        if meta.complete:
            return meta
        if meta.n_rows != n_rows:
            raise CacheCorrupted(entry_dir / META_NAME,
                                 f"entry has {meta.n_rows} rows but this extraction writes {n_rows}", self.root)
        for record in meta.shards:
            spec = meta.arrays[record.array]
            _check_shard(entry_dir, record, tuple(spec["row_shape"]), spec["dtype"], True, self.root)
        return meta

    def entries(self) -> list[EntryInfo]:
        """Every entry folder under the root, with the cheap checks' verdict."""
        if not self.root.is_dir():
            return []
        infos = []
        for entry_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and _entry_hash_of(p) == p.name):
            infos.append(self._inspect(entry_dir, checksum=False))
        return infos

    def verify(self, entry_dir: Path) -> EntryInfo:
        """Full check of one entry folder, including every shard's sha256."""
        return self._inspect(entry_dir, checksum=True)

    def _inspect(self, entry_dir: Path, checksum: bool) -> EntryInfo:
        try:
            meta = EntryMeta.load(entry_dir, self.root)
        except CacheCorrupted as err:
            return EntryInfo(entry_dir.name, entry_dir, None, str(err))
        try:
            for record in meta.shards:
                spec = meta.arrays[record.array]
                _check_shard(entry_dir, record, tuple(spec["row_shape"]), spec["dtype"], checksum, self.root)
        except CacheCorrupted as err:
            return EntryInfo(entry_dir.name, entry_dir, meta, str(err))
        return EntryInfo(entry_dir.name, entry_dir, meta, None)

    def match(self, prefix: str = "") -> list[Path]:
        """Entry folders whose hash starts with ``prefix`` (all when empty)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir()
                      if p.is_dir() and _entry_hash_of(p) == p.name and p.name.startswith(prefix.lower()))

    def remove(self, entry_dir: Path) -> None:
        """Delete one entry folder; raises ``filelock.Timeout`` if a writer holds it.

        The folder is first renamed out of the namespace (atomic), so no reader ever sees a
        half-deleted entry under its hash.
        """
        doomed = entry_dir.with_name(f".{entry_dir.name}.deleting-{os.getpid()}")
        with self._lock(entry_dir, timeout=0):
            os.replace(entry_dir, doomed)
        shutil.rmtree(doomed)


__all__ = ["CACHE_ENV", "ActivationStore", "CacheCorrupted", "CacheEntry", "CacheError", "CacheIncomplete", "CacheKey",
           "EntryInfo", "EntryMeta", "EntryWriter", "ShardedArray", "default_cache_dir", "sha256_file"]
