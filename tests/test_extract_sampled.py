"""Sampled extraction (``patches_per_image``): the paper's SAE training set of k random patches per image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scopebench.backbones import Backbone, LayerOutput, load_backbone
from scopebench.backbones.planted import N_GLOBAL_ATOMS, N_LOCAL
from scopebench.suite.scales import PAPER_SCALE, PLANTED_SCALE
from scopebench.pipeline.cache import ActivationStore, CacheKey
from scopebench.data.scenes import SyntheticScenes
from scopebench.pipeline.extract import Activations, extract_tokens
from scopebench.sae import train_sae
from scopebench.suite.workbench import Workbench

N_IMAGES, K = 12, 4
pytestmark = pytest.mark.usefixtures("one_thread")
U32 = 2.0**-24  # float32 unit roundoff


def _gamma(k: int) -> float:
    """Higham's gamma_k = k u / (1 - k u): a k-term float32 sum or dot product, in any order, is within gamma_k sum |terms|.

    (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.5 and Lemma 3.1.)
    The order depends on batch composition, thread count and CPU ISA, so the same token
    computed in two batches may differ in its last bits, never by more than twice this.
    """
    return k * U32 / (1 - k * U32)


def _token_tolerance(tokens: np.ndarray) -> np.ndarray:
    """Bound on ``|a - b|`` for two float32 evaluations of planted tokens, per token (broadcasts over the last axis).

    A planted token is ``local_codes @ local_atoms + global_part``: an ``N_LOCAL``-term dot
    product of codes cast from float64 and scaled (2 roundings) onto atoms with orthonormal
    rows, so ``sum_i |c_i| |A_ij| <= ||c|| = ||local part||``, plus a per-view global vector
    (an ``N_GLOBAL_ATOMS``-term dot product, 4 roundings in the cast codes and scale
    factors) and one rounding for the sum.  Both parts are orthogonal, so each is at most
    ``||token||``: one evaluation is within ``gamma_{N_LOCAL + N_GLOBAL_ATOMS + 8} ||token||``
    of the exact value in every coordinate.
    """
    return 2 * _gamma(N_LOCAL + N_GLOBAL_ATOMS + 8) * np.linalg.norm(tokens.astype(np.float64), axis=-1, keepdims=True)


def _prefix_tolerance(all_tokens: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """Bound on ``|a - b|`` for two float32 evaluations of the planted prefix token (broadcasts over the last axis).

    The prefix is the mean of the view's N local parts (an N-term float32 sum of terms
    each within the token bound above, and a division) plus the global vector (as above),
    so one evaluation is within ``gamma_{N + N_LOCAL + N_GLOBAL_ATOMS + 20} (mean_i ||token_i|| +
    ||prefix||)`` of the exact value.
    """
    n_patches = all_tokens.shape[1]
    scale = (np.linalg.norm(all_tokens.astype(np.float64), axis=-1).mean(1)[:, None, None]
             + np.linalg.norm(prefix.astype(np.float64), axis=-1, keepdims=True))
    return 2 * _gamma(n_patches + N_LOCAL + N_GLOBAL_ATOMS + 20) * scale


def _within(actual: np.ndarray, expected: np.ndarray, tolerance: np.ndarray) -> np.ndarray:
    """Per row (last axis reduced): whether ``actual`` and ``expected`` differ by at most ``tolerance`` everywhere."""
    return (np.abs(actual.astype(np.float64) - expected.astype(np.float64)) <= tolerance).all(axis=-1)


def assert_within(actual: np.ndarray, expected: np.ndarray, tolerance: np.ndarray) -> None:
    ok = _within(actual, expected, tolerance)
    excess = np.abs(actual.astype(np.float64) - expected.astype(np.float64)) / tolerance
    assert ok.all(), f"{(~ok).sum()} rows differ beyond float32 rounding (worst: {excess.max():.3g} x the bound)"


class CrashingBackbone:
    """Delegates to a backbone, counts forward calls, and raises on call number ``fail_at`` (0-based)."""

    def __init__(self, inner: Backbone, fail_at: int | None = None) -> None:
        self.inner = inner
        self.spec, self.preprocess = inner.spec, inner.preprocess
        self.fail_at = fail_at
        self.calls = 0

    @property
    def weights_id(self) -> str:
        return self.inner.weights_id

    def forward_layer(self, pixels: torch.Tensor, *, attention: bool = False) -> LayerOutput:
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("simulated crash mid-extraction")
        self.calls += 1
        return self.inner.forward_layer(pixels, attention=attention)


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return load_backbone("planted")


@pytest.fixture(scope="module")
def scenes() -> SyntheticScenes:
    return SyntheticScenes(N_IMAGES, image_size=112, seed=3)


@pytest.fixture(scope="module")
def full(backbone, scenes, tmp_path_factory) -> Activations:
    return extract_tokens(backbone, scenes, ActivationStore(tmp_path_factory.mktemp("full")), batch_size=5,
                          progress=False)


def _sampled(backbone: Backbone, scenes: SyntheticScenes, root: Path, **options) -> Activations:
    options = {"patches_per_image": K, "batch_size": 5, "progress": False, **options}
    return extract_tokens(backbone, scenes, ActivationStore(root), **options)


def _entry_bytes(acts: Activations) -> int:
    return sum(path.stat().st_size for path in acts.entry.path.rglob("*") if path.is_file())


def _npy_data_bytes(path: Path) -> int:
    """Bytes of a .npy file after its header (read with numpy's own header parser)."""
    with path.open("rb") as handle:
        major, _ = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        read_header(handle)
        return path.stat().st_size - handle.tell()


def test_sampled_tokens_are_the_full_tokens_at_the_recorded_positions(backbone, scenes, full, tmp_path):
    sampled = _sampled(backbone, scenes, tmp_path)
    n_patches = backbone.spec.n_patches
    assert sampled.tokens.shape == (N_IMAGES, K, backbone.spec.embed_dim) and sampled.tokens_per_image == K
    assert sampled.patch_index.shape == (N_IMAGES, K) and sampled.patch_index.dtype == np.int64
    assert full.patch_index is None and full.tokens_per_image == n_patches
    positions = sampled.patch_index
    assert positions.min() >= 0 and positions.max() < n_patches
    assert all(len(set(row)) == K for row in positions.tolist())  # distinct within each image
    assert len({tuple(row) for row in positions.tolist()}) > N_IMAGES // 2  # not one fixed set of positions
    # the module-scoped full run (set up before the one_thread fixture) batches other images and
    # threads: equal up to float32 rounding, not bit for bit
    all_tokens, prefix = np.asarray(full.tokens), np.asarray(full.prefix)
    expected = np.take_along_axis(all_tokens, positions[:, :, None], axis=1)
    assert_within(np.asarray(sampled.tokens), expected, _token_tolerance(expected))
    assert_within(np.asarray(sampled.prefix), prefix, _prefix_tolerance(all_tokens, prefix))
    # ... and the bounds are far too tight to pass the token of a neighbouring patch, or another image's prefix
    neighbour = np.take_along_axis(all_tokens, (positions[:, :, None] + 1) % n_patches, axis=1)
    assert (~_within(np.asarray(sampled.tokens), neighbour, _token_tolerance(neighbour))).mean() > 0.9
    assert not _within(np.asarray(sampled.prefix), np.roll(prefix, 1, axis=0), _prefix_tolerance(all_tokens, prefix)).any()
    np.testing.assert_array_equal(sampled.image_index, np.arange(N_IMAGES))
    assert sampled.flat_tokens([0, 1]).shape == (2 * K, backbone.spec.embed_dim)


def test_positions_depend_only_on_seed_and_dataset_index(backbone, scenes, tmp_path):
    reference = _sampled(backbone, scenes, tmp_path / "a", batch_size=5, shard_rows=4)
    again = _sampled(backbone, scenes, tmp_path / "b", batch_size=5, shard_rows=4)
    other_layout = _sampled(backbone, scenes, tmp_path / "c", batch_size=3, shard_rows=7)
    reordered = _sampled(backbone, scenes, tmp_path / "d", indices=[9, 2, 5], batch_size=2)
    np.testing.assert_array_equal(again.patch_index, reference.patch_index)
    np.testing.assert_array_equal(np.asarray(again.tokens), np.asarray(reference.tokens))
    np.testing.assert_array_equal(other_layout.patch_index, reference.patch_index)
    reference_tokens = np.asarray(reference.tokens)
    assert_within(np.asarray(other_layout.tokens), reference_tokens, _token_tolerance(reference_tokens))
    assert other_layout.tokens.n_shards == 2 and reference.tokens.n_shards == 3  # the layouts did differ
    np.testing.assert_array_equal(reordered.patch_index, reference.patch_index[[9, 2, 5]])
    assert_within(np.asarray(reordered.tokens), reference_tokens[[9, 2, 5]], _token_tolerance(reference_tokens[[9, 2, 5]]))


def test_another_sample_seed_draws_other_positions(backbone, scenes, tmp_path):
    seed0 = _sampled(backbone, scenes, tmp_path, sample_seed=0)
    seed1 = _sampled(backbone, scenes, tmp_path, sample_seed=1)
    differing_images = (seed0.patch_index != seed1.patch_index).any(axis=1).sum()
    assert differing_images >= N_IMAGES - 1  # two 4-subsets of 196 coincide with probability ~1e-7
    assert seed0.key.digest != seed1.key.digest


def test_sampled_and_full_extractions_never_share_an_entry(backbone, scenes, tmp_path):
    store = ActivationStore(tmp_path)
    full = extract_tokens(backbone, scenes, store, progress=False)
    runs = [full, _sampled(backbone, scenes, tmp_path), _sampled(backbone, scenes, tmp_path, patches_per_image=5),
            _sampled(backbone, scenes, tmp_path, sample_seed=7)]
    assert len({run.key.digest for run in runs}) == 4 and len(store.entries()) == 4
    # full extraction keeps the key it always had, so existing caches (the planted default) stay valid
    spec = backbone.spec
    legacy = CacheKey(kind="tokens", backbone=spec.name, weights_id=backbone.weights_id, layer=spec.layer,
                      dataset=scenes.identity, transform=full.key.transform, sampling=f"all:n={N_IMAGES}",
                      dtype="float32")
    assert full.key == legacy
    assert runs[1].key.sampling == f"all:n={N_IMAGES};patches:k={K}:seed=0"
    assert runs[1].entry.meta.attrs["patch_sample"]["per_image"] == K
    # the full extraction ignores sample_seed: same entry, no forward pass
    counting = CrashingBackbone(backbone)
    assert extract_tokens(counting, scenes, store, sample_seed=3, progress=False).key == full.key
    assert counting.calls == 0


def test_interrupted_sampled_extraction_resumes_to_the_uninterrupted_result(backbone, scenes, tmp_path):
    reference = _sampled(backbone, scenes, tmp_path / "ref", batch_size=2, shard_rows=4)
    crashing = CrashingBackbone(backbone, fail_at=3)  # shard 0 = calls 0-1; crash in shard 1's second call
    with pytest.raises(RuntimeError, match="simulated crash"):
        _sampled(crashing, scenes, tmp_path / "run", batch_size=2, shard_rows=4)
    resumed_backbone = CrashingBackbone(backbone)
    resumed = _sampled(resumed_backbone, scenes, tmp_path / "run", batch_size=2, shard_rows=4)
    assert resumed_backbone.calls == 4  # shards 1 and 2 only, two batches each
    assert resumed.key == reference.key
    np.testing.assert_array_equal(resumed.patch_index, reference.patch_index)
    np.testing.assert_array_equal(np.asarray(resumed.tokens), np.asarray(reference.tokens))
    np.testing.assert_array_equal(np.asarray(resumed.prefix), np.asarray(reference.prefix))


@pytest.mark.parametrize("bad", [0, -1, 197, 2.0, True])
def test_bad_patches_per_image_names_the_grid(backbone, scenes, tmp_path, bad):
    with pytest.raises(ValueError, match=r"patches_per_image must be an integer in \[1, 196\].*196 patches"):
        _sampled(backbone, scenes, tmp_path, patches_per_image=bad)
    assert not ActivationStore(tmp_path).entries()  # refused before any entry was created


def test_sampling_refuses_attention_and_negative_seeds(backbone, scenes, tmp_path):
    with pytest.raises(ValueError, match="attention=True needs every patch.*patches_per_image=None"):
        _sampled(backbone, scenes, tmp_path, attention=True)
    with pytest.raises(ValueError, match="sample_seed must be a non-negative integer"):
        _sampled(backbone, scenes, tmp_path, sample_seed=-1)


def test_sampled_entry_is_smaller_on_disk_by_the_kept_fraction(backbone, scenes, full, tmp_path):
    sampled = _sampled(backbone, scenes, tmp_path)
    spec = backbone.spec
    token_files = sorted((sampled.entry.path / "shards").glob("tokens-*.npy"))
    assert sum(_npy_data_bytes(path) for path in token_files) == N_IMAGES * K * spec.embed_dim * 4
    index_files = sorted((sampled.entry.path / "shards").glob("patch_index-*.npy"))
    assert sum(_npy_data_bytes(path) for path in index_files) == N_IMAGES * K * 8
    full_token_bytes = sum(_npy_data_bytes(p) for p in (full.entry.path / "shards").glob("tokens-*.npy"))
    assert full_token_bytes == N_IMAGES * spec.n_patches * spec.embed_dim * 4
    # whole folders, meta.json and headers included: (4 tokens + CLS) vs (196 + CLS) rows per image
    assert _entry_bytes(sampled) < 0.05 * _entry_bytes(full)


def test_train_sae_uses_every_stored_token_each_epoch(backbone, scenes, tmp_path):
    sampled = _sampled(backbone, scenes, tmp_path)

    class RecordingTokens:
        """The sampled array, logging which (image, patch) pairs each read asks for."""

        shape = sampled.tokens.shape

        def __init__(self) -> None:
            self.reads: list[set[tuple[int, int]]] = []

        def __getitem__(self, index: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            images, patches = index
            self.reads.append(set(zip(images.tolist(), patches.tolist())))
            return sampled.tokens[images, patches]

    tokens = RecordingTokens()
    per_epoch, batch = N_IMAGES * K, 16
    recipe = {"architecture": "topk", "d_sae": 32, "k": 4, "batch_size": batch, "tokens_per_image": K,
              "n_tokens": 2 * per_epoch, "lr": 1e-3}
    result = train_sae(recipe, tokens, seed=0, progress=False)
    steps = 2 * per_epoch // batch
    assert len(result.loss_log) == steps and all(np.isfinite(e["fvu"]) for e in result.loss_log)
    step_reads = tokens.reads[1 : 1 + steps]  # read 0 is the scale sample; the last is calibration
    every_pair = {(i, p) for i in range(N_IMAGES) for p in range(K)}
    per_epoch_steps = per_epoch // batch
    for epoch in range(2):
        reads = step_reads[epoch * per_epoch_steps : (epoch + 1) * per_epoch_steps]
        assert sum(len(r) for r in reads) == per_epoch and set().union(*reads) == every_pair


def test_paper_scale_samples_training_tokens_and_planted_default_does_not(tmp_path):
    assert PAPER_SCALE.train_patches_per_image == 4 and PLANTED_SCALE.train_patches_per_image is None
    scale = PLANTED_SCALE.updated({"train_images": 6, "reconstruction": {"images": 5},
                                   "train_patches_per_image": 3})
    bench = Workbench(ActivationStore(tmp_path), device="cpu", progress=False, scales={"planted": scale})
    train, evaluation = bench.tokens("planted", "train"), bench.tokens("planted", "eval")
    assert train.tokens.shape[:2] == (6, 3) and train.patch_index.shape == (6, 3)
    assert train.key.sampling.endswith(";patches:k=3:seed=0")
    assert evaluation.patch_index is None and evaluation.tokens.shape[:2] == (5, 196)
    default = Workbench(ActivationStore(tmp_path / "default"), device="cpu", progress=False,
                        scales={"planted": PLANTED_SCALE.updated({"train_images": 6})})
    assert default.tokens("planted", "train").patch_index is None
