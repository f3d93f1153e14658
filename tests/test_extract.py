"""Extraction through the cache, with a tiny deterministic backbone defined here."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from scopebench.backbones.base import Backbone, Grid, LayerOutput, Preprocess
from scopebench.backbones.spec import BackboneSpec
from scopebench.pipeline.cache import ActivationStore, CacheCorrupted
from scopebench.data.base import ImageDataset, Sample
from scopebench.device import resolve_device
from scopebench.pipeline.extract import extract_scc_tokens, extract_tokens
from scopebench.pipeline.scc import scc, square_resize

PATCH, SIDE, DIM, HEADS = 4, 5, 6, 2


def _spec(n_prefix: int) -> BackboneSpec:
    return BackboneSpec(name="fake", family="planted", size="s", source="planted", model_id="fake",
                        image_size=PATCH * SIDE, patch_size=PATCH, n_prefix=n_prefix, depth=2, embed_dim=DIM,
                        n_heads=HEADS, layer=1, tau="auto")


class LocalBackbone:
    """Token = fixed linear map of the patch's own pixels (so it follows content under SCC).

    Prefix tokens are means of the patch tokens times (1 + k); attention is a softmax of
    token dot products.  ``fail_after`` makes the forward call with that 0-based number raise.
    """

    def __init__(self, n_prefix: int = 1, seed: int = 0, fail_after: int | None = None):
        self.spec = _spec(n_prefix)
        self.preprocess = Preprocess(image_size=PATCH * SIDE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                                     interpolation="bilinear")
        self.proj = torch.randn(3 * PATCH * PATCH, DIM, generator=torch.Generator().manual_seed(seed))
        self.seed = seed
        self.calls = 0
        self.fail_after = fail_after

    @property
    def weights_id(self) -> str:
        return f"random-init:{self.seed}"

    def forward_layer(self, pixels: torch.Tensor, *, attention: bool = False) -> LayerOutput:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash mid-extraction")
        self.calls += 1
        assert not torch.is_grad_enabled(), "extraction must run without autograd"
        b = pixels.shape[0]
        x = (pixels - 0.5) / 0.25
        patches = x.unfold(2, PATCH, PATCH).unfold(3, PATCH, PATCH)  # [B, 3, R, C, n, n]
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, SIDE * SIDE, -1)
        tokens = patches @ self.proj
        k = self.spec.n_prefix
        prefix = tokens.mean(1, keepdim=True) * (1 + torch.arange(k).view(1, k, 1))
        everything = torch.cat([prefix, tokens], 1)
        attn = None
        if attention:
            logits = torch.einsum("bqd,bkd->bqk", everything, everything) / DIM
            attn = torch.stack([logits * (h + 1) for h in range(HEADS)], 1).softmax(-1)
        return LayerOutput(tokens=tokens, prefix=prefix, grid=Grid(PATCH, SIDE, SIDE, k), attention=attn)


class NoiseImages:
    """Seeded random images of varying non-square sizes."""

    def __init__(self, n: int = 7, seed: int = 1):
        gen = torch.Generator().manual_seed(seed)
        self.images = [torch.rand(3, 24 + 2 * i, 30 - i, generator=gen) for i in range(n)]

    @property
    def identity(self) -> str:
        return f"noise:n={len(self.images)}"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Sample:
        return Sample(image=self.images[index])


def _pixels(backbone: LocalBackbone, images: list[torch.Tensor]) -> torch.Tensor:
    pre = backbone.preprocess
    return torch.stack([square_resize(im, pre.image_size, pre.interpolation) for im in images])


def _direct_forward(backbone: LocalBackbone, images: list[torch.Tensor]) -> LayerOutput:
    with torch.no_grad():
        return backbone.forward_layer(_pixels(backbone, images), attention=True)


U32 = 2.0**-24  # float32 unit roundoff


def _gamma(k: int) -> float:
    """Higham's gamma_k = k u / (1 - k u): a k-term float32 sum or dot product, in any order, is within gamma_k sum |terms|.

    (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.5 and Lemma 3.1.)
    The order depends on batch shape, thread count and CPU ISA (AVX2 vs AVX-512, FMA or
    not), so the same token computed in batches of 3 and of 7 may differ in its last bits.
    """
    return k * U32 / (1 - k * U32)


def _rounding_bounds(backbone: LocalBackbone, pixels: torch.Tensor) -> dict[str, np.ndarray]:
    """Elementwise bounds on ``|a - b|`` for two float32 evaluations of ``backbone.forward_layer(pixels)``.

    - tokens ``patches @ proj``: ``K = 3 p^2``-term dot products (the normalised pixels
      are elementwise, so identical in both), one evaluation within
      ``e_t = gamma_K |patches| @ |proj|`` of the exact value;
    - prefix ``mean_i(tokens) * (1 + k)``: the tokens' errors, an ``N``-term sum, a division
      and a product: ``e_p = gamma_{K + N + 2} mean_i(|patches| @ |proj|) (1 + k)``;
    - attention ``softmax((h + 1) e e^T / D)`` over ``T = P + N`` keys: each logit is off by
      at most ``d = (h + 1) (E a^T + a E^T + gamma_{D+2} a a^T) / D`` (``E`` the rows' errors,
      ``a = |row| + E``); perturbing all logits of a query by at most ``delta = max d``
      scales each probability by ``exp(+-2 delta)``, and evaluating the softmax (shift by the
      max, exp to 1 ulp, a T-term sum, the normalisation) by ``exp(+-rho)``,
      ``rho = gamma_{T+4} + u (max z - min z)``.

    Two evaluations differ by at most twice one's error (for attention: a ratio within
    ``exp(+-2 (2 delta + rho))``), plus twice float32's smallest normal for underflow.
    """
    with torch.no_grad():
        out = backbone.forward_layer(pixels, attention=True)
        b, n, k = pixels.shape[0], SIDE * SIDE, backbone.spec.n_prefix
        x = ((pixels - 0.5) / 0.25).double().abs()  # the same float32 normalisation as forward_layer
        patches = x.unfold(2, PATCH, PATCH).unfold(3, PATCH, PATCH).permute(0, 2, 3, 1, 4, 5).reshape(b, n, -1)
        magnitude = patches @ backbone.proj.double().abs()  # [B, N, D]: sum_i |p_i| |W_ij|
        token_error = _gamma(patches.shape[-1]) * magnitude
        prefix_error = (_gamma(patches.shape[-1] + n + 2) * magnitude.mean(1, keepdim=True)
                        * (1 + torch.arange(k, dtype=torch.float64).view(1, k, 1)))
        rows = torch.cat([out.prefix, out.tokens], 1).double()
        error = torch.cat([prefix_error, token_error], 1)
        a = rows.abs() + error
        heads = torch.arange(1, HEADS + 1, dtype=torch.float64).view(1, HEADS, 1, 1)
        logit_error = (error @ a.transpose(1, 2) + a @ error.transpose(1, 2) + _gamma(DIM + 2) * a @ a.transpose(1, 2)) / DIM
        delta = (heads * logit_error[:, None]).amax(-1, keepdim=True)  # [B, H, T, 1]
        logits = heads * (rows @ rows.transpose(1, 2) / DIM)[:, None]
        rho = _gamma(n + k + 4) + U32 * (logits.amax(-1, keepdim=True) - logits.amin(-1, keepdim=True) + 2 * delta)
        tiny = float(np.finfo(np.float32).tiny)
        attention = out.attention.double() * torch.expm1(2 * (2 * delta + rho)) + 2 * tiny
    return {"tokens": (2 * token_error).numpy(), "prefix": (2 * prefix_error).numpy(), "attention": attention.numpy()}


def assert_within(actual: np.ndarray, expected: np.ndarray, bound: np.ndarray) -> None:
    """``|actual - expected| <= bound`` elementwise: equal up to float32 rounding."""
    excess = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)) - bound
    assert (excess <= 0).all(), f"{(excess > 0).sum()} elements differ beyond float32 rounding (worst by {excess.max():.3g})"


def test_fakes_satisfy_the_protocols():
    assert isinstance(LocalBackbone(), Backbone) and isinstance(NoiseImages(), ImageDataset)


def test_stored_tokens_equal_a_direct_forward_pass(tmp_path):
    backbone, data = LocalBackbone(), NoiseImages()
    acts = extract_tokens(backbone, data, ActivationStore(tmp_path), batch_size=3, shard_rows=2, attention=True,
                          progress=False)
    direct = _direct_forward(LocalBackbone(), data.images)
    # batches of 3 vs one of 7: equal up to float32 rounding, not bit for bit
    bound = _rounding_bounds(LocalBackbone(), _pixels(backbone, data.images))
    assert acts.tokens.shape == (7, SIDE * SIDE, DIM) and acts.prefix.shape == (7, 1, DIM)
    assert_within(np.asarray(acts.tokens), direct.tokens.numpy(), bound["tokens"])
    assert_within(np.asarray(acts.prefix), direct.prefix.numpy(), bound["prefix"])
    assert_within(np.asarray(acts.attention), direct.attention.numpy(), bound["attention"])
    np.testing.assert_array_equal(acts.image_index, np.arange(7))
    assert acts.grid == Grid(PATCH, SIDE, SIDE, 1)
    assert_within(acts.flat_tokens([1, 2]), direct.tokens[1:3].reshape(-1, DIM).numpy(),
                  bound["tokens"][1:3].reshape(-1, DIM))
    # ... bounds far too tight to pass a neighbouring patch's token or another image's prefix and attention
    assert (np.abs(np.asarray(acts.tokens) - np.roll(direct.tokens.numpy(), 1, axis=1)) > bound["tokens"]).any(-1).all()
    assert (np.abs(np.asarray(acts.prefix) - np.roll(direct.prefix.numpy(), 1, axis=0)) > bound["prefix"]).any(-1).all()
    attention_elsewhere = np.roll(direct.attention.numpy(), 1, axis=0)
    assert (np.abs(np.asarray(acts.attention) - attention_elsewhere) > bound["attention"]).any(-1).all()
    # token of patch (r, c) is the projection of exactly those pixels: an independent recomputation
    pixels = (square_resize(data.images[3], PATCH * SIDE, "bilinear") - 0.5) / 0.25
    r, c = 2, 4
    patch = pixels[:, r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH].reshape(-1)
    assert_within(acts.tokens[3, r * SIDE + c], (patch @ backbone.proj).numpy(), bound["tokens"][3, r * SIDE + c])


def test_second_extraction_of_same_key_does_no_forward_pass(tmp_path):
    store, data = ActivationStore(tmp_path), NoiseImages()
    first_backbone, second_backbone = LocalBackbone(), LocalBackbone()
    first = extract_tokens(first_backbone, data, store, batch_size=2, progress=False)
    second = extract_tokens(second_backbone, data, store, batch_size=2, progress=False)
    assert first_backbone.calls == 4 and second_backbone.calls == 0
    assert first.key == second.key
    np.testing.assert_array_equal(np.asarray(second.tokens), np.asarray(first.tokens))


def test_interrupted_extraction_resumes_to_the_uninterrupted_result(tmp_path):
    data = NoiseImages()
    reference = extract_tokens(LocalBackbone(), data, ActivationStore(tmp_path / "ref"), batch_size=2,
                               shard_rows=3, progress=False)
    store = ActivationStore(tmp_path / "run")
    crashing = LocalBackbone(fail_after=3)  # shard 0 = 2 calls, crash in shard 1's second call
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_tokens(crashing, data, store, batch_size=2, shard_rows=3, progress=False)
    resumed_backbone = LocalBackbone()
    resumed = extract_tokens(resumed_backbone, data, store, batch_size=2, shard_rows=3, progress=False)
    assert resumed_backbone.calls == 3  # shards 1 (rows 3-5) and 2 (row 6) only
    np.testing.assert_array_equal(np.asarray(resumed.tokens), np.asarray(reference.tokens))
    np.testing.assert_array_equal(np.asarray(resumed.prefix), np.asarray(reference.prefix))
    assert resumed.key.digest == reference.key.digest


def test_keys_of_different_inputs_never_collide(tmp_path):
    store, data = ActivationStore(tmp_path), NoiseImages()
    runs = [
        extract_tokens(LocalBackbone(), data, store, progress=False),
        extract_tokens(LocalBackbone(seed=5), data, store, progress=False),  # other weights
        extract_tokens(LocalBackbone(), data, store, indices=[4, 1], progress=False),
        extract_tokens(LocalBackbone(), data, store, indices=[1, 4], progress=False),
        extract_tokens(LocalBackbone(), data, store, dtype="float16", progress=False),
        extract_tokens(LocalBackbone(), NoiseImages(seed=2, n=7), store, progress=False),  # same identity!
    ]
    digests = [run.key.digest for run in runs]
    assert len(set(digests[:5])) == 5 and digests[5] == digests[0]  # identity, not pixels, addresses content
    assert len(store.entries()) == 5
    np.testing.assert_array_equal(runs[2].image_index, [4, 1])
    bound = _rounding_bounds(LocalBackbone(), _pixels(LocalBackbone(), [data.images[4], data.images[1]]))["tokens"]
    assert_within(np.asarray(runs[2].tokens), np.asarray(runs[0].tokens)[[4, 1]], bound)  # a batch of 2 vs of 7
    assert not np.array_equal(np.asarray(runs[1].tokens), np.asarray(runs[0].tokens))
    assert runs[4].tokens.dtype == np.float16
    np.testing.assert_allclose(np.asarray(runs[4].tokens, dtype=np.float32), np.asarray(runs[0].tokens),
                               rtol=2e-3, atol=2e-3)


def test_a_cached_entry_of_another_geometry_under_the_same_weights_id_is_refused(tmp_path):
    class WideBackbone(LocalBackbone):
        """Same weights_id as LocalBackbone, twice the token width: a backbone whose id misses its geometry."""

        def __init__(self) -> None:
            super().__init__()
            self.spec = self.spec.model_copy(update={"embed_dim": 2 * DIM})
            self.proj = torch.cat([self.proj, self.proj], 1)

    store, data = ActivationStore(tmp_path), NoiseImages()
    extract_tokens(LocalBackbone(), data, store, progress=False)
    with pytest.raises(ValueError, match=rf"tokens rows of shape \({SIDE * SIDE}, {DIM}\).*does not pin its geometry"):
        extract_tokens(WideBackbone(), data, store, progress=False)


def test_corrupted_entry_is_reported_not_reextracted(tmp_path):
    store, data = ActivationStore(tmp_path), NoiseImages()
    acts = extract_tokens(LocalBackbone(), data, store, shard_rows=4, progress=False)
    shard = acts.entry.path / "shards" / "tokens-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-4])
    backbone = LocalBackbone()
    with pytest.raises(CacheCorrupted, match="tokens-00001.npy"):
        extract_tokens(backbone, data, store, shard_rows=4, progress=False)
    assert backbone.calls == 0


def test_scc_views_match_direct_views_and_agree_on_the_overlap(tmp_path):
    backbone, data, shift = LocalBackbone(n_prefix=0), NoiseImages(n=3), 2
    acts = extract_scc_tokens(backbone, data, ActivationStore(tmp_path), shift, batch_size=2, progress=False)
    assert acts.prefix_a.shape == (3, 0, DIM)  # prefix-free backbones (SigLIP) store empty prefixes
    views = [scc(im, shift, patch_size=PATCH, grid_side=SIDE, interpolation="bilinear") for im in data.images]
    with torch.no_grad():
        direct_a = LocalBackbone(n_prefix=0).forward_layer(torch.stack([v.view_a for v in views])).tokens
        direct_b = LocalBackbone(n_prefix=0).forward_layer(torch.stack([v.view_b for v in views])).tokens
    # batches of 2 vs one of 3: equal up to float32 rounding
    bound_a = _rounding_bounds(LocalBackbone(n_prefix=0), torch.stack([v.view_a for v in views]))["tokens"]
    bound_b = _rounding_bounds(LocalBackbone(n_prefix=0), torch.stack([v.view_b for v in views]))["tokens"]
    assert_within(np.asarray(acts.tokens_a), direct_a.numpy(), bound_a)
    assert_within(np.asarray(acts.tokens_b), direct_b.numpy(), bound_b)
    # a purely local backbone sees identical pixels on the overlap: content cell (u, v) is A's
    # patch (u+s, v+s) and B's patch (u, v), so the overlap tokens agree up to rounding
    a, b = acts.overlap_tokens()
    assert a.shape == (3, (SIDE - shift) ** 2, DIM)
    assert_within(a, b, bound_a[:, acts.overlap.in_a.numpy()])
    u, v = 1, 2
    assert_within(acts.tokens_a[0, (u + shift) * SIDE + v + shift], acts.tokens_b[0, u * SIDE + v],
                  bound_a[0, (u + shift) * SIDE + v + shift])
    assert not np.allclose(np.asarray(acts.tokens_a), np.asarray(acts.tokens_b))  # the views do differ
    assert acts.key.kind == "scc-s2" and acts.shift == 2


def test_scc_extraction_is_cached_per_shift(tmp_path):
    store, data = ActivationStore(tmp_path), NoiseImages(n=2)
    first = LocalBackbone()
    extract_scc_tokens(first, data, store, 1, progress=False)
    again, other_shift = LocalBackbone(), LocalBackbone()
    extract_scc_tokens(again, data, store, 1, progress=False)
    extract_scc_tokens(other_shift, data, store, 3, progress=False)
    assert (first.calls, again.calls, other_shift.calls) == (2, 0, 2)  # two views per batch


def test_bad_arguments_name_the_fix(tmp_path):
    store, data = ActivationStore(tmp_path), NoiseImages()
    with pytest.raises(ValueError, match="1 <= s < p=5"):
        extract_scc_tokens(LocalBackbone(), data, store, 5, progress=False)
    with pytest.raises(ValueError, match="indices must lie in \\[0, 7\\)"):
        extract_tokens(LocalBackbone(), data, store, indices=[0, 7], progress=False)
    with pytest.raises(ValueError, match="dtype 'bfloat16' cannot be stored"):
        extract_tokens(LocalBackbone(), data, store, dtype="bfloat16", progress=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available; use device='cpu'"):
            extract_tokens(LocalBackbone(), data, store, device="cuda", progress=False)
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_backbone_breaking_its_spec_is_refused(tmp_path):
    backbone = LocalBackbone()
    backbone.spec = backbone.spec.model_copy(update={"embed_dim": DIM + 1})
    with pytest.raises(ValueError, match="its spec promises"):
        extract_tokens(backbone, NoiseImages(), ActivationStore(tmp_path), progress=False)


def test_concurrent_extractions_of_one_key_run_the_backbone_once(tmp_path):
    class SlowBackbone(LocalBackbone):
        def forward_layer(self, pixels: torch.Tensor, *, attention: bool = False) -> LayerOutput:
            time.sleep(0.05)  # widen the window in which the two writers would overlap without the lock
            return super().forward_layer(pixels, attention=attention)

    data, backbones = NoiseImages(), [SlowBackbone(), SlowBackbone()]
    results: list[np.ndarray] = [None, None]  # type: ignore[list-item]

    def run(i: int) -> None:
        acts = extract_tokens(backbones[i], data, ActivationStore(tmp_path), batch_size=2, shard_rows=2,
                              progress=False)
        results[i] = np.asarray(acts.tokens)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(b.calls for b in backbones) == 4  # 7 images in batches of 2: one extraction's worth
    np.testing.assert_array_equal(results[0], results[1])
    bound = _rounding_bounds(LocalBackbone(), _pixels(LocalBackbone(), data.images))["tokens"]
    assert_within(results[0], _direct_forward(LocalBackbone(), data.images).tokens.numpy(), bound)  # batches of 2 vs 7
