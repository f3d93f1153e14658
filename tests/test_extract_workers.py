"""Extraction with DataLoader workers writes the serial run's shards, and the precision option.

The planted backbone on synthetic scenes of another size than its input (so every image is
resized in the worker), over several shards whose size is not a multiple of the batch size.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from scopebench.backbones import load_backbone
from scopebench.backbones.base import Grid, LayerOutput, Preprocess
from scopebench.backbones.spec import BackboneSpec
from scopebench.data.base import Sample
from scopebench.data.scenes import SyntheticScenes
from scopebench.pipeline.cache import META_NAME, ActivationStore, CacheKey
from scopebench.pipeline.extract import extract_scc_tokens, extract_tokens, scc_views
from scopebench.pipeline.loader import RowViews, batch_plan
from scopebench.pipeline.throughput import images_per_second
from scopebench.results.records import BackboneInfo

N_IMAGES, BATCH, SHARD = 7, 2, 3  # shards of 3, 3, 1 rows; batches of 2 + 1 inside a full shard
SHIFT = 2


@pytest.fixture(scope="module")
def planted():
    return load_backbone("planted")


@pytest.fixture(scope="module")
def scenes() -> SyntheticScenes:
    return SyntheticScenes(N_IMAGES, image_size=136, seed=3)


class CrashingBackbone:
    """Delegates to a backbone; the forward call numbered ``fail_at`` (0-based) raises."""

    def __init__(self, inner, fail_at: int | None = None) -> None:
        self.inner, self.fail_at, self.calls = inner, fail_at, 0
        self.spec, self.preprocess = inner.spec, inner.preprocess

    @property
    def weights_id(self) -> str:
        return self.inner.weights_id

    def forward_layer(self, pixels: torch.Tensor, *, attention: bool = False) -> LayerOutput:
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash mid-extraction")
        self.calls += 1
        return self.inner.forward_layer(pixels, attention=attention)


def _shard_files(entry_path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((entry_path / "shards").iterdir())}


def _assert_same_entry(got, expected) -> None:
    """Same key, same shard list with the same checksums, same file bytes."""
    assert got.key.digest == expected.key.digest
    meta = [json.loads((entry.path / META_NAME).read_text()) for entry in (got.entry, expected.entry)]
    assert meta[0]["shards"] == meta[1]["shards"] and meta[0]["key"] == meta[1]["key"]
    assert _shard_files(got.entry.path) == _shard_files(expected.entry.path)


def _tokens(planted, scenes, root, **options):
    return extract_tokens(planted, scenes, ActivationStore(root), batch_size=BATCH, shard_rows=SHARD, attention=True,
                          progress=False, **options)


def _scc(planted, scenes, root, **options):
    return extract_scc_tokens(planted, scenes, ActivationStore(root), SHIFT, batch_size=BATCH, shard_rows=SHARD,
                              progress=False, **options)


def test_batches_restart_at_each_shard_and_cover_every_row_once():
    plan = batch_plan(11, 3, breaks=[4, 8])
    assert plan == [[0, 1, 2], [3], [4, 5, 6], [7], [8, 9, 10]]
    assert batch_plan(5, 2) == [[0, 1], [2, 3], [4]]
    assert batch_plan(0, 4, breaks=[0]) == []
    with pytest.raises(ValueError, match="batch_size"):
        batch_plan(3, 0)


def test_a_worker_run_writes_the_serial_runs_shards(planted, scenes, serial_tokens, tmp_path):
    parallel = _tokens(planted, scenes, tmp_path, workers=2)
    assert serial_tokens.entry.meta.rows_per_shard == SHARD and len(_shard_files(serial_tokens.entry.path)) == 3 * 4
    _assert_same_entry(parallel, serial_tokens)


def test_a_worker_scc_run_writes_the_serial_runs_shards(planted, scenes, tmp_path):
    serial = _scc(planted, scenes, tmp_path / "serial", workers=0)
    parallel = _scc(planted, scenes, tmp_path / "workers", workers=2)
    _assert_same_entry(parallel, serial)


@pytest.fixture(scope="module")
def serial_tokens(planted, scenes, tmp_path_factory):
    return _tokens(planted, scenes, tmp_path_factory.mktemp("serial"), workers=0)


@pytest.mark.parametrize(("crashed_workers", "resumed_workers"), [(2, 0), (0, 2)])
def test_a_run_resumed_with_the_other_loader_is_the_uninterrupted_one(planted, scenes, serial_tokens, tmp_path,
                                                                      crashed_workers, resumed_workers):
    crashing = CrashingBackbone(planted, fail_at=3)  # shard 0 = calls 0-1; crash in shard 1's second call
    with pytest.raises(RuntimeError, match="simulated crash"):
        _tokens(crashing, scenes, tmp_path / "run", workers=crashed_workers)
    resumed_backbone = CrashingBackbone(planted)
    resumed = _tokens(resumed_backbone, scenes, tmp_path / "run", workers=resumed_workers)
    assert resumed_backbone.calls == 3  # shards 1 (batches of 2 + 1) and 2 (one of 1) only
    _assert_same_entry(resumed, serial_tokens)


def test_what_a_worker_gets_survives_pickling(planted, scenes):
    """Under a spawn or forkserver start method the dataset and view maker travel to the worker pickled:
    a spawned DataLoader worker computes what the main process does."""
    views = RowViews(scenes, np.array([5, 2]), scc_views(planted, SHIFT))
    spawned = DataLoader(views, batch_size=None, num_workers=1, multiprocessing_context="spawn")
    for position, got in enumerate(spawned):
        for suffix, pixels in views[position].items():
            assert torch.equal(got[suffix], pixels)
    assert position == len(views) - 1


def test_bad_worker_counts_and_precisions_are_refused(planted, scenes, tmp_path):
    with pytest.raises(ValueError, match="workers must be a non-negative integer"):
        _tokens(planted, scenes, tmp_path, workers=-1)
    with pytest.raises(ValueError, match="precision 'fp8' is not one of"):
        _tokens(planted, scenes, tmp_path, precision="fp8")


# ---------------------------------------------------------------- precision

PATCH, SIDE, DIM = 4, 4, 8
BF16_UNIT = 2.0**-8  # bfloat16 unit roundoff (8 significant bits)


class LinearBackbone:
    """Token = fixed linear map of its patch's pixels: autocast's effect on it has a closed-form bound."""

    def __init__(self) -> None:
        self.spec = BackboneSpec(name="linear", family="planted", size="s", source="planted", model_id="linear",
                                 image_size=PATCH * SIDE, patch_size=PATCH, n_prefix=0, depth=1, embed_dim=DIM,
                                 n_heads=1, layer=0, tau="auto")
        self.preprocess = Preprocess(image_size=PATCH * SIDE, mean=(0.5,) * 3, std=(0.25,) * 3,
                                     interpolation="bilinear")
        self.proj = torch.randn(3 * PATCH * PATCH, DIM, generator=torch.Generator().manual_seed(0))
        self.weights_id = "random-init:0"

    def patches(self, pixels: torch.Tensor) -> torch.Tensor:
        b = pixels.shape[0]
        x = pixels.unfold(2, PATCH, PATCH).unfold(3, PATCH, PATCH)
        return x.permute(0, 2, 3, 1, 4, 5).reshape(b, SIDE * SIDE, -1)

    def forward_layer(self, pixels: torch.Tensor, *, attention: bool = False) -> LayerOutput:
        tokens = self.patches(pixels) @ self.proj  # autocast runs this matmul in the chosen precision
        return LayerOutput(tokens=tokens, prefix=tokens[:, :0], grid=Grid(PATCH, SIDE, SIDE, 0))


class SquareImages:
    identity = "square-noise:n=6"

    def __init__(self) -> None:
        self.images = torch.rand(6, 3, PATCH * SIDE, PATCH * SIDE, generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        return Sample(image=self.images[index])


def test_bf16_autocast_stores_float32_tokens_within_bf16_rounding_of_fp32(tmp_path):
    backbone, data = LinearBackbone(), SquareImages()
    store = ActivationStore(tmp_path)
    full = extract_tokens(backbone, data, store, batch_size=4, progress=False)
    reduced = extract_tokens(backbone, data, store, batch_size=4, progress=False, precision="bf16")
    exact = (backbone.patches(data.images).double() @ backbone.proj.double()).numpy()
    magnitude = (backbone.patches(data.images).double().abs() @ backbone.proj.double().abs()).numpy()
    # both operands rounded to bf16 (u each), a float32 accumulation, the product rounded to bf16 (u)
    k = 3 * PATCH * PATCH
    bound = (3 * BF16_UNIT + 3 * BF16_UNIT**2 + k * 2.0**-24) * magnitude
    reduced_tokens, full_tokens = np.asarray(reduced.tokens), np.asarray(full.tokens)
    assert reduced_tokens.dtype == np.float32
    assert (np.abs(reduced_tokens - exact) <= bound).all()
    assert (np.abs(full_tokens - exact) <= k * 2.0**-23 * magnitude).all()
    assert not np.array_equal(reduced_tokens, full_tokens)  # autocast was on
    assert reduced.key.precision == "bf16" and reduced.key.digest != full.key.digest


def test_fp32_keys_are_the_keys_written_before_the_precision_option(tmp_path):
    acts = extract_tokens(LinearBackbone(), SquareImages(), ActivationStore(tmp_path), progress=False)
    fields = {name: getattr(acts.key, name) for name in
              ("kind", "backbone", "weights_id", "layer", "dataset", "transform", "sampling", "dtype")}
    assert acts.key.canonical_json() == json.dumps(fields, sort_keys=True, separators=(",", ":"))
    meta = json.loads((acts.entry.path / META_NAME).read_text())
    assert "precision" not in meta["key"] and CacheKey.from_dict(meta["key"]) == acts.key
    bf16 = CacheKey(**fields, precision="bf16")
    assert json.loads(bf16.canonical_json())["precision"] == "bf16"
    assert CacheKey.from_dict(bf16.as_dict()) == bf16


def test_result_files_record_the_precision():
    assert BackboneInfo(name="planted").precision == "fp32"  # files written before the option read as fp32
    assert BackboneInfo(name="planted", precision="bf16").model_dump()["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision"):
        BackboneInfo(name="planted", precision="fp8")


def test_throughput_times_the_images_after_the_warm_up_batch(planted, scenes):
    counting = CrashingBackbone(planted)
    measured = images_per_second(counting, scenes, n_images=4, batch_size=2, workers=1, shift=SHIFT)
    assert counting.calls == 2 * 3  # warm-up batch + two timed batches, two SCC views each
    assert measured.images == 4 and measured.seconds > 0 and measured.images_per_s == 4 / measured.seconds
    with pytest.raises(ValueError, match="the dataset has 7 images; timing 6 after a warm-up batch of 2 needs 8"):
        images_per_second(planted, scenes, n_images=6, batch_size=2)
