"""Extraction: run a backbone over a dataset once and keep its tokens in the activation store.

Everything downstream (SAE training, CDS, attention EMD, probes) reads the returned
memory-mapped arrays, never the backbone.  The cache key records the backbone, its
weights, the layer, the dataset identity, the image transform, the sampled indices and
the storage dtype, so a second call with the same inputs does no forward pass, and an
interrupted call resumes at the first shard not yet written.

``extract_tokens(..., patches_per_image=k)`` keeps only ``k`` random patch tokens per image
(the paper's SAE training set: 4 per image of the 1.28M ImageNet-1K training images).  The positions are a pure
function of ``(sample_seed, dataset index)``, so they do not depend on batch size, shard
size or the point an interrupted run resumed from; they are stored beside the tokens.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from scopebench.backbones.base import Backbone, Grid, LayerOutput
from scopebench import distributed
from scopebench.pipeline.cache import (ActivationStore, CacheEntry, CacheError, CacheKey, EntryMeta, EntryWriter,
                                       ShardedArray, ShardWriter)
from scopebench.data.base import ImageDataset
from scopebench.device import autocast, resolve_device
from scopebench.pipeline.loader import ResizedView, SCCViews, ViewMaker, batch_plan, load_views
from scopebench.pipeline.scc import OverlapIndex, overlap_index
from scopebench.precision import DEFAULT_PRECISION, check_precision

STORABLE_DTYPES = {"float32": np.float32, "float16": np.float16}
_SHARD_TARGET_BYTES = 256 * 2**20  # default shard size: large enough for fast I/O, small enough to resume cheaply
# First word of the seed sequence of patch sampling, so its stream never coincides with
# another seeded stream of the project (e.g. the SAE sampler's default_rng([seed, epoch])).
PATCH_SAMPLE_STREAM = 0x5A3B_0001


@dataclass
class Activations:
    """Tokens of one extraction, memory-mapped from the store (row i = image ``image_index[i]``)."""

    key: CacheKey
    entry: CacheEntry
    grid: Grid
    tokens: ShardedArray  # [n_img, N, D] patch tokens ([n_img, k, D] when sampled, k = patches_per_image)
    prefix: ShardedArray  # [n_img, P, D] prefix tokens (CLS, registers)
    image_index: np.ndarray  # [n_img] dataset indices
    attention: ShardedArray | None = None  # [n_img, H, P+N, P+N] when extracted with attention=True
    patch_index: np.ndarray | None = None  # [n_img, k] grid position of each stored token; None = all N kept

    @property
    def meta(self) -> EntryMeta:
        return self.entry.meta

    @property
    def n_images(self) -> int:
        return len(self.tokens)

    @property
    def tokens_per_image(self) -> int:
        """Patch tokens stored per image: N for a full extraction, k when sampled."""
        return int(self.tokens.shape[1])

    def iter_batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_row, tokens[b, N, D])`` batches of images, memory-mapped (no copy)."""
        return self.tokens.iter_batches(batch_size)

    def flat_tokens(self, rows: slice | Sequence[int] | np.ndarray = slice(None)) -> np.ndarray:
        """Stored patch tokens of the chosen images as one ``[n * tokens_per_image, D]`` matrix (a copy)."""
        chosen = self.tokens[rows]
        return np.asarray(chosen).reshape(-1, self.tokens.shape[-1])


@dataclass
class SCCActivations:
    """Tokens of the two SCC views of each image (DESIGN.md, Shifted Context Crop)."""

    key: CacheKey
    entry: CacheEntry
    grid: Grid  # grid of each view
    shift: int
    overlap: OverlapIndex  # content cell -> patch index in view A / view B
    tokens_a: ShardedArray  # [n_img, N, D]
    tokens_b: ShardedArray
    prefix_a: ShardedArray  # [n_img, P, D]
    prefix_b: ShardedArray
    image_index: np.ndarray
    attention_a: ShardedArray | None = None  # [n_img, H, P+N, P+N]
    attention_b: ShardedArray | None = None

    @property
    def meta(self) -> EntryMeta:
        return self.entry.meta

    @property
    def n_images(self) -> int:
        return len(self.tokens_a)

    def overlap_tokens(self, rows: slice | Sequence[int] | np.ndarray = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Tokens on the overlap in content coordinates: ``(a, b)``, each ``[n, side*side, D]``."""
        a = np.asarray(self.tokens_a[rows])[:, self.overlap.in_a.numpy()]
        b = np.asarray(self.tokens_b[rows])[:, self.overlap.in_b.numpy()]
        return a, b


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _sampling(dataset: ImageDataset, indices: Sequence[int] | np.ndarray | None) -> tuple[np.ndarray, str]:
    n = len(dataset)
    if indices is None:
        return np.arange(n, dtype=np.int64), f"all:n={n}"
    chosen = np.asarray(indices, dtype=np.int64).reshape(-1)
    if chosen.size == 0:
        raise ValueError("indices is empty; pass at least one dataset index (or None for the whole dataset)")
    if chosen.min() < 0 or chosen.max() >= n:
        raise ValueError(f"indices must lie in [0, {n}) for dataset {dataset.identity!r}; got range "
                         f"[{chosen.min()}, {chosen.max()}]")
    digest = hashlib.sha256(chosen.tobytes()).hexdigest()
    return chosen, f"indices:n={chosen.size}:sha256={digest}"


@dataclass(frozen=True)
class PatchSample:
    """``per_image`` distinct patch positions of an ``n_patches`` grid kept per image.

    Image ``i`` of the dataset keeps the ascending positions
    ``sort(default_rng([PATCH_SAMPLE_STREAM, seed, i]).choice(n_patches, per_image, replace=False))``:
    they depend on nothing but the seed and the image's dataset index.
    """

    per_image: int
    seed: int
    n_patches: int

    def __post_init__(self) -> None:
        if isinstance(self.per_image, bool) or not isinstance(self.per_image, (int, np.integer)) \
                or not 1 <= self.per_image <= self.n_patches:
            raise ValueError(f"patches_per_image must be an integer in [1, {self.n_patches}] (the backbone's grid has "
                             f"{self.n_patches} patches); got {self.per_image!r}. Pass None to keep every patch")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"sample_seed must be a non-negative integer, got {self.seed!r}")

    @property
    def key_suffix(self) -> str:
        """Appended to the key's ``sampling`` field: a sampled entry never shares a folder with a full one."""
        return f";patches:k={self.per_image}:seed={self.seed}"

    def positions(self, image_index: np.ndarray) -> np.ndarray:
        """``[len(image_index), per_image]`` int64 positions, ascending within each image."""
        chosen = np.empty((len(image_index), self.per_image), dtype=np.int64)
        for row, index in enumerate(image_index):
            rng = np.random.default_rng([PATCH_SAMPLE_STREAM, int(self.seed), int(index)])
            chosen[row] = np.sort(rng.choice(self.n_patches, size=self.per_image, replace=False))
        return chosen


def _expected_grid(backbone: Backbone) -> Grid:
    spec = backbone.spec
    return Grid(patch_size=spec.patch_size, rows=spec.grid_side, cols=spec.grid_side, n_prefix=spec.n_prefix)


def _check_output(out: LayerOutput, grid: Grid, dim: int, batch: int, name: str, attention: bool) -> None:
    if (out.grid != grid or tuple(out.tokens.shape) != (batch, grid.n_patches, dim)
            or tuple(out.prefix.shape) != (batch, grid.n_prefix, dim)):
        raise ValueError(f"backbone {name!r} returned grid {out.grid}, tokens {tuple(out.tokens.shape)} and prefix "
                         f"{tuple(out.prefix.shape)} for a batch of {batch}; its spec promises {grid} with "
                         f"embed_dim={dim} (fix the adapter or its registry entry)")
    if attention and out.attention is None:
        raise ValueError(f"backbone {name!r} returned no attention although attention=True was asked")


def _shard_rows(backbone: Backbone, n_views: int, itemsize: int, attention: bool, n_rows: int,
                patch_sample: PatchSample | None) -> int:
    """Images per shard so that one shard holds about ``_SHARD_TARGET_BYTES`` of stored arrays."""
    spec = backbone.spec
    n_all = spec.n_patches + spec.n_prefix
    n_stored = (patch_sample.per_image if patch_sample else spec.n_patches) + spec.n_prefix
    row_bytes = n_views * n_stored * spec.embed_dim * itemsize
    if attention:
        row_bytes += n_views * spec.n_heads * n_all * n_all * itemsize
    return max(1, min(n_rows, _SHARD_TARGET_BYTES // max(row_bytes, 1)))


def _move_to(backbone: Backbone, device: torch.device) -> None:
    mover = getattr(backbone, "to", None)
    if callable(mover):
        mover(device)


def _keep_patches(tokens: torch.Tensor, positions: np.ndarray | None) -> torch.Tensor:
    """``tokens[b, positions[b]]`` on the tokens' device (so only kept rows leave it); all when None."""
    if positions is None:
        return tokens
    index = torch.from_numpy(positions).to(tokens.device)[:, :, None].expand(-1, -1, tokens.shape[-1])
    return torch.gather(tokens, 1, index)


def _as_float32(out: LayerOutput) -> LayerOutput:
    """A reduced-precision forward's output in float32, as everything downstream expects."""
    attention = None if out.attention is None else out.attention.float()
    return replace(out, tokens=out.tokens.float(), prefix=out.prefix.float(), attention=attention)


def iter_forward(backbone: Backbone, dataset: ImageDataset, rows: np.ndarray, make_views: ViewMaker, batch_size: int,
                 target: torch.device, attention: bool, *, workers: int = 0, precision: str = DEFAULT_PRECISION,
                 breaks: Sequence[int] = ()) -> Iterator[tuple[np.ndarray, dict[str, LayerOutput]]]:
    """The one forward loop: images ``rows`` in batches, each view of each batch through the designated block.

    Yields ``(batch_rows, {view suffix: checked LayerOutput})``; call it under ``torch.inference_mode()``.
    Images are loaded by ``workers`` DataLoader processes while the device computes (0: in this
    process; the numbers are the same, see :mod:`scopebench.pipeline.loader`); a batch never spans
    a position in ``breaks``.  ``precision`` other than fp32 runs the forward under autocast and
    returns float32 outputs.  Close the generator if you stop early, so the workers stop too.
    """
    spec, grid = backbone.spec, _expected_grid(backbone)
    batches = batch_plan(len(rows), batch_size, breaks)
    loaded = load_views(dataset, rows, make_views, batches, workers=workers, target=target)
    with contextlib.closing(loaded):
        for positions, views in zip(batches, loaded):
            batch_rows = rows[positions[0] : positions[-1] + 1]
            outputs = {}
            for suffix, pixels in views.items():
                with autocast(target, precision):
                    out = backbone.forward_layer(pixels, attention=attention)
                if precision != DEFAULT_PRECISION:
                    out = _as_float32(out)
                _check_output(out, grid, spec.embed_dim, len(batch_rows), spec.name, attention)
                outputs[suffix] = out
            yield batch_rows, outputs


def _compute_shard(forward: Iterator[tuple[np.ndarray, dict[str, LayerOutput]]], rows: np.ndarray, np_dtype: type,
                   attention: bool, patch_sample: PatchSample | None, bar: tqdm) -> dict[str, np.ndarray]:
    """The arrays of the shard of images ``rows``, from the batches of ``forward`` that cover them (in order)."""
    positions = patch_sample.positions(rows) if patch_sample else None
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    first = 0
    while first < len(rows):
        batch_rows, views = next(forward)
        if not np.array_equal(batch_rows, rows[first : first + len(batch_rows)]):
            raise RuntimeError("the forward loop's batches do not follow the shard's rows (a batch spans a shard)")
        kept = positions[first : first + len(batch_rows)] if positions is not None else None
        first += len(batch_rows)
        for suffix, out in views.items():
            outputs = {"tokens": _keep_patches(out.tokens, kept), "prefix": out.prefix,
                       "attention": out.attention if attention else None}
            for name, tensor in outputs.items():
                if tensor is not None:
                    parts[name + suffix].append(tensor.float().cpu().numpy().astype(np_dtype))
        bar.update(len(batch_rows))
    arrays = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    arrays["image_index"] = rows
    if positions is not None:
        arrays["patch_index"] = positions
    return arrays


def _run(backbone: Backbone, dataset: ImageDataset, store: ActivationStore, *, kind: str, transform: dict[str, Any],
         make_views: ViewMaker, n_views: int, indices: Sequence[int] | np.ndarray | None, batch_size: int,
         device: str | torch.device, dtype: str, shard_rows: int | None, attention: bool, progress: bool,
         attrs: dict[str, Any], patch_sample: PatchSample | None = None, workers: int = 0,
         precision: str = DEFAULT_PRECISION) -> CacheEntry:
    """Fill every missing shard of the entry for these inputs (under its lock), then open it.

    The missing shards are forwarded by one loop (one set of loader workers for all of them),
    each batch within one shard, so a shard holds what a serial run over it alone writes.
    """
    check_precision(precision)
    if dtype not in STORABLE_DTYPES:
        raise ValueError(f"dtype {dtype!r} cannot be stored; use one of {sorted(STORABLE_DTYPES)}")
    if batch_size < 1 or (shard_rows is not None and shard_rows < 1):
        raise ValueError(f"batch_size ({batch_size}) and shard_rows ({shard_rows}) must be >= 1")
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"dataset must implement scopebench.data.base.ImageDataset, got {type(dataset).__name__}")
    rows, sampling = _sampling(dataset, indices)
    if patch_sample is not None:
        sampling += patch_sample.key_suffix
    spec = backbone.spec
    key = CacheKey(kind=kind + ("+attention" if attention else ""), backbone=spec.name,
                   weights_id=backbone.weights_id, layer=spec.layer, dataset=dataset.identity,
                   transform=_canonical(transform), sampling=sampling, dtype=dtype, precision=precision)
    if distributed.from_main(lambda: store.status(key) == "complete", f"cache status of {key.digest[:12]}"):
        return _fitting(store.read(key), backbone, patch_sample)
    np_dtype = STORABLE_DTYPES[dtype]
    per_shard = shard_rows or _shard_rows(backbone, n_views, np.dtype(np_dtype).itemsize, attention, len(rows),
                                          patch_sample)
    target = resolve_device(device)

    def computed(ranges: dict[int, tuple[int, int]], shown: tqdm) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Each shard of ``ranges`` in order, from one loader over all their rows (decoding overlaps the forward)."""
        todo = np.concatenate([rows[start:stop] for start, stop in ranges.values()]) if ranges else rows[:0]
        shard_starts = np.cumsum([0] + [stop - start for start, stop in ranges.values()])[:-1]
        with contextlib.closing(iter_forward(backbone, dataset, todo, make_views, batch_size, target, attention,
                                             workers=workers, precision=precision, breaks=shard_starts)) as forward:
            for index, (start, stop) in ranges.items():
                yield index, _compute_shard(forward, rows[start:stop], np_dtype, attention, patch_sample, shown)

    def bar(total: int) -> tqdm:
        return tqdm(total=total, disable=not progress or not distributed.is_main(), unit="img",
                    desc=f"extract {key.kind} {spec.name}")

    if distributed.world_size() == 1:
        with store.writer(key, n_rows=len(rows), rows_per_shard=per_shard, attrs=attrs) as writer:
            missing = writer.missing_shards()
            ranges = {index: writer.shard_range(index) for index in missing}
            if missing:
                _move_to(backbone, target)
            with torch.inference_mode(), bar(sum(stop - start for start, stop in ranges.values())) as shown:
                for index, arrays in computed(ranges, shown):
                    writer.write_shard(index, arrays)
            if not writer.complete:
                writer.finish()
    else:
        _run_ranks(store, key, rows, per_shard, attrs, computed, bar, lambda: _move_to(backbone, target))
    return _fitting(store.read(key), backbone, patch_sample)


def _run_ranks(store: ActivationStore, key: CacheKey, rows: np.ndarray, per_shard: int, attrs: dict[str, Any],
               computed: Callable[[dict[int, tuple[int, int]], tqdm], Iterator[tuple[int, dict[str, np.ndarray]]]],
               bar: Callable[[int], tqdm],
               move: Callable[[], None]) -> None:
    """The shard loop of a torchrun launch: rank 0 holds the entry, each rank writes its share of the shards.

    Rank 0 opens the entry under its lock (resuming, verifying) and sends every rank the missing
    shards; rank ``r`` writes ``missing[r::world]`` with a :class:`ShardWriter`; once every rank
    is done, rank 0 lists the shards in meta.json (each file checked against its sha256) and
    seals the entry, all before it lets go of the lock.  A second launch on the same key waits
    for the lock, then finds the entry complete.
    """
    what = f"extraction of {key.kind} {key.backbone} ({key.digest[:12]})"
    opened: list[EntryWriter] = []  # rank 0's writer, holding the entry's lock until the commit
    with contextlib.ExitStack() as held:
        def plan() -> dict[str, Any]:
            opened.append(held.enter_context(store.writer(key, n_rows=len(rows), rows_per_shard=per_shard,
                                                          attrs=attrs)))
            return {"missing": opened[0].missing_shards(), "rows_per_shard": opened[0].meta.rows_per_shard}

        layout = distributed.from_main(plan, what)
        shards = ShardWriter(store.path(key), len(rows), layout["rows_per_shard"])
        mine = distributed.share(layout["missing"])
        with distributed.together(what):
            if mine:
                move()
            ranges = {index: shards.shard_range(index) for index in mine}
            with torch.inference_mode(), bar(sum(stop - start for start, stop in ranges.values())) as shown:
                for index, arrays in computed(ranges, shown):
                    shards.write_shard(index, arrays)

        def commit() -> None:
            writer = opened[0]
            problems = writer.adopt_shards()
            missing = writer.missing_shards()
            if missing:
                raise CacheError(f"{what}: shards {missing} are missing after every rank finished"
                                 + (f" ({'; '.join(problems)})" if problems else "") + "; re-run to write them")
            if not writer.complete:
                writer.finish()

        distributed.from_main(commit, what)


def _fitting(entry: CacheEntry, backbone: Backbone, patch_sample: PatchSample | None) -> CacheEntry:
    """``entry``, after checking its token arrays have the shape this backbone produces.

    The key pins the weights; this catches what a key cannot, e.g. a hand-built backbone
    whose ``weights_id`` does not change with its geometry.
    """
    spec = backbone.spec
    rows = (patch_sample.per_image if patch_sample else spec.n_patches, spec.embed_dim)
    for name, array in entry.arrays.items():
        if name.startswith("tokens") and tuple(array.row_shape) != rows:
            raise ValueError(f"cache entry {entry.path} holds {name} rows of shape {tuple(array.row_shape)}, but "
                             f"{spec.name!r} gives {rows}: its weights_id ({backbone.weights_id!r}) does not pin "
                             "its geometry; give the backbone a weights_id that changes with it")
    return entry


def _patch_sample(backbone: Backbone, patches_per_image: int | None, sample_seed: int,
                  attention: bool) -> PatchSample | None:
    if patches_per_image is None:
        return None
    if attention:
        raise ValueError("attention=True needs every patch of the image; extract attention with "
                         "patches_per_image=None (sampling is meant for SAE training tokens)")
    return PatchSample(per_image=patches_per_image, seed=sample_seed, n_patches=backbone.spec.n_patches)


def _token_attrs(backbone: Backbone, patch_sample: PatchSample | None) -> dict[str, Any]:
    """Informative ``meta.json`` attrs: the grid, and how patches were drawn when sampled."""
    attrs: dict[str, Any] = {"grid": asdict(_expected_grid(backbone))}
    if patch_sample is not None:
        attrs["patch_sample"] = {"per_image": int(patch_sample.per_image), "seed": int(patch_sample.seed),
                                 "stream": PATCH_SAMPLE_STREAM}
    return attrs


def extract_tokens(backbone: Backbone, dataset: ImageDataset, store: ActivationStore, *,
                   indices: Sequence[int] | np.ndarray | None = None, batch_size: int = 32,
                   device: str | torch.device = "cpu", dtype: str = "float32", shard_rows: int | None = None,
                   attention: bool = False, progress: bool = True, patches_per_image: int | None = None,
                   sample_seed: int = 0, workers: int = 0, precision: str = DEFAULT_PRECISION) -> Activations:
    """Patch and prefix tokens of each image (square-resized to the backbone's input size).

    ``indices`` selects dataset items (default: all, in order); ``shard_rows`` images per
    shard (default: about 256 MiB per shard); ``attention=True`` also stores the designated
    block's attention probabilities.  The backbone is moved to ``device`` if it has ``.to``.
    ``patches_per_image=k`` stores only ``k`` distinct patch tokens per image, drawn from
    ``(sample_seed, dataset index)`` (see :class:`PatchSample`); their grid positions are
    ``Activations.patch_index``.  ``sample_seed`` is ignored when every patch is kept.
    ``workers`` DataLoader processes decode and resize images while the backbone computes (0: in
    this process; the stored arrays are the same bytes either way).  ``precision`` "bf16" / "fp16"
    runs the forward under autocast (a different cache entry); the default fp32 is the paper's.
    """
    patch_sample = _patch_sample(backbone, patches_per_image, sample_seed, attention)
    pre = backbone.preprocess
    transform = {"op": "square_resize", "size": pre.image_size, "interpolation": pre.interpolation,
                 "mean": list(pre.mean), "std": list(pre.std)}
    entry = _run(backbone, dataset, store, kind="tokens", transform=transform,
                 make_views=plain_view(backbone), n_views=1,
                 indices=indices, batch_size=batch_size, device=device, dtype=dtype, shard_rows=shard_rows,
                 attention=attention, progress=progress, attrs=_token_attrs(backbone, patch_sample),
                 patch_sample=patch_sample, workers=workers, precision=precision)
    arrays = entry.arrays
    patch_index = arrays.get("patch_index")
    return Activations(key=entry.meta.key, entry=entry, grid=_expected_grid(backbone), tokens=arrays["tokens"],
                       prefix=arrays["prefix"], image_index=np.asarray(arrays["image_index"][:]),
                       attention=arrays.get("attention"),
                       patch_index=None if patch_index is None else np.asarray(patch_index[:]))


def plain_view(backbone: Backbone) -> ViewMaker:
    """Image -> ``{"": model input}``: the backbone's square resize (plain extraction's one view)."""
    pre = backbone.preprocess
    return ResizedView(size=pre.image_size, interpolation=pre.interpolation)


def scc_views(backbone: Backbone, shift: int) -> ViewMaker:
    """Image -> ``{"_a": view A, "_b": view B}`` of ``scopebench.pipeline.scc.scc`` with the backbone's geometry."""
    spec, pre = backbone.spec, backbone.preprocess
    return SCCViews(shift=shift, patch_size=spec.patch_size, grid_side=spec.grid_side, interpolation=pre.interpolation)


def extract_scc_tokens(backbone: Backbone, dataset: ImageDataset, store: ActivationStore, shift: int, *,
                       indices: Sequence[int] | np.ndarray | None = None, batch_size: int = 32,
                       device: str | torch.device = "cpu", dtype: str = "float32", shard_rows: int | None = None,
                       attention: bool = False, progress: bool = True, workers: int = 0,
                       precision: str = DEFAULT_PRECISION) -> SCCActivations:
    """Tokens of SCC views A and B of each image (``scopebench.pipeline.scc.scc`` with the backbone's geometry).

    ``workers`` and ``precision`` as in :func:`extract_tokens`; each image is decoded once for both views.
    """
    spec, pre = backbone.spec, backbone.preprocess
    overlap = overlap_index(spec.grid_side, shift)  # validates shift before any work
    if spec.grid_side * spec.patch_size != pre.image_size:
        raise ValueError(f"backbone {spec.name!r}: grid_side*patch_size={spec.grid_side * spec.patch_size} differs "
                         f"from its input size {pre.image_size}; SCC views would not fit the model input")

    make_views = scc_views(backbone, shift)
    transform = {"op": "scc", "shift": shift, "patch_size": spec.patch_size, "grid_side": spec.grid_side,
                 "interpolation": pre.interpolation, "mean": list(pre.mean), "std": list(pre.std)}
    grid = _expected_grid(backbone)
    entry = _run(backbone, dataset, store, kind=f"scc-s{shift}", transform=transform, make_views=make_views,
                 n_views=2, indices=indices, batch_size=batch_size, device=device, dtype=dtype, shard_rows=shard_rows,
                 attention=attention, progress=progress, attrs={"grid": asdict(grid), "shift": shift},
                 workers=workers, precision=precision)
    arrays = entry.arrays
    return SCCActivations(key=entry.meta.key, entry=entry, grid=grid, shift=shift, overlap=overlap,
                          tokens_a=arrays["tokens_a"], tokens_b=arrays["tokens_b"], prefix_a=arrays["prefix_a"],
                          prefix_b=arrays["prefix_b"], image_index=np.asarray(arrays["image_index"][:]),
                          attention_a=arrays.get("attention_a"), attention_b=arrays.get("attention_b"))
