"""train_sae: planted-dictionary recovery, reproducibility, resume after a crash, recipes, sampling."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scopebench.sae import load_recipe, load_sae, train_sae
from scopebench.sae import token_sampling as sampling_module
from scopebench.sae.arch import SAERecipeBase
from scopebench.sae.arch.topk import TopKRecipe
from scopebench.sae.token_sampling import PatchTokenSampler

N_IMAGES, N_PATCHES, D_IN, N_ATOMS = 400, 16, 32, 40


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray]:
    """Tokens that are sparse non-negative combinations (~2 active) of 40 unit atoms in 32-d."""
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(N_ATOMS, D_IN))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    active = rng.random((N_IMAGES * N_PATCHES, N_ATOMS)) < 2 / N_ATOMS
    codes = active * rng.uniform(1, 3, size=active.shape)
    tokens = (codes @ atoms).reshape(N_IMAGES, N_PATCHES, D_IN).astype(np.float32)
    return tokens, atoms


RECIPE = {
    "architecture": "batchtopk",
    "d_sae": 64,
    "k": 3,
    "batch_size": 128,
    "epochs": 20,
    "lr": 0.03,
    "lr_warmup_steps": 10,
    "aux_k": 8,
    "dead_after_tokens": 1000,
    "calibration_batches": 5,
}


@pytest.fixture(scope="module")
def trained(planted, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped fixture: runs before the per-test thread fixture
    try:
        result = train_sae(RECIPE, planted[0], seed=0, checkpoint_dir=folder, progress=False)
    finally:
        torch.set_num_threads(previous)
    return result, folder


def test_batchtopk_recovers_planted_atoms(planted, trained):
    result, _ = trained
    _, atoms = planted
    w_dec = result.sae.W_dec.detach().numpy().astype(np.float64)
    best_cos = np.abs(atoms @ w_dec.T).max(axis=1)  # each true atom's best-matching decoder row
    assert best_cos.mean() > 0.95
    assert (best_cos > 0.9).mean() >= 0.85


def test_loss_decreases_and_log_has_one_entry_per_step(trained):
    result, _ = trained
    log = result.loss_log
    assert [entry["step"] for entry in log] == list(range(len(log))) and len(log) == 400 * 4 * 20 // 128
    first = np.mean([e["fvu"] for e in log[:10]])
    last = np.mean([e["fvu"] for e in log[-10:]])
    assert last < 0.2 * first and last < 0.1


def test_inference_threshold_gives_l0_close_to_k_and_rows_stay_unit(planted, trained):
    result, _ = trained
    sae = result.sae
    x = torch.from_numpy(planted[0][:50].reshape(-1, D_IN))
    with torch.no_grad():
        l0 = (sae.encode(x) > 0).sum(1).float().mean().item()
        fvu = ((x - sae(x)) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert float(sae.threshold) > 0
    assert 0.8 * 3 <= l0 <= 1.2 * 3
    assert fvu < 0.1
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))


def test_checkpoint_folder_holds_sae_and_loss_log(trained):
    result, folder = trained
    assert json.loads((folder / "loss_log.json").read_text()) == result.loss_log
    loaded = load_sae(folder / "sae", expected_d_in=D_IN)
    x = torch.randn(20, D_IN)
    torch.testing.assert_close(loaded.encode(x), result.sae.encode(x).detach())


SMALL = dict(RECIPE, epochs=2, d_sae=48, checkpoint_every=5)


def _weights(sae) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in sae.state_dict().items()}


def test_same_seed_same_weights_memmap_or_array_and_other_seed_differs(planted, tmp_path):
    tokens = planted[0][:100]
    memmap = np.lib.format.open_memmap(tmp_path / "tokens.npy", mode="w+", dtype=np.float32, shape=tokens.shape)
    memmap[:] = tokens
    memmap.flush()
    a = _weights(train_sae(SMALL, tokens, seed=3, progress=False).sae)
    b = _weights(train_sae(SMALL, np.load(tmp_path / "tokens.npy", mmap_mode="r"), seed=3, progress=False).sae)
    c = _weights(train_sae(SMALL, tokens, seed=4, progress=False).sae)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["W_dec"], c["W_dec"])


def test_resume_after_crash_equals_uninterrupted_run(planted, tmp_path, monkeypatch):
    tokens = planted[0][:100]  # 100 images * 4 tokens * 2 epochs / 128 = 6 steps; make it longer:
    recipe = dict(SMALL, epochs=4)  # 12 steps, state saved at steps 5 and 10
    uninterrupted = train_sae(recipe, tokens, seed=1, progress=False)

    original_batch = PatchTokenSampler.batch

    def crashing_batch(self, step, batch_size):
        if step == 7:
            raise KeyboardInterrupt("simulated crash")
        return original_batch(self, step, batch_size)

    monkeypatch.setattr(sampling_module.PatchTokenSampler, "batch", crashing_batch)
    with pytest.raises(KeyboardInterrupt):
        train_sae(recipe, tokens, seed=1, checkpoint_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / "train_state" / "state.json").read_text())["step"] == 5
    assert not (tmp_path / "sae").exists()
    monkeypatch.setattr(sampling_module.PatchTokenSampler, "batch", original_batch)
    resumed = train_sae(recipe, tokens, seed=1, checkpoint_dir=tmp_path, progress=False)

    expected, got = _weights(uninterrupted.sae), _weights(resumed.sae)
    assert all(torch.equal(expected[k], got[k]) for k in expected), "resumed weights differ"
    assert resumed.loss_log == uninterrupted.loss_log
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("damage", ["truncate-json", "edit-tensors", "drop-field"])
def test_damaged_training_state_is_named_not_resumed_from(planted, tmp_path, damage):
    """The resumable state is checksummed too: a damaged one is refused with the folder and the fix."""
    tokens = planted[0][:100]
    train_sae(dict(SMALL, epochs=4), tokens, seed=1, checkpoint_dir=tmp_path, progress=False, max_steps=5)
    state = tmp_path / "train_state"
    if damage == "truncate-json":
        (state / "state.json").write_text((state / "state.json").read_text()[:40])
    elif damage == "edit-tensors":
        raw = bytearray((state / "state.safetensors").read_bytes())
        raw[-5] ^= 0x01
        (state / "state.safetensors").write_bytes(bytes(raw))
    else:
        meta = json.loads((state / "state.json").read_text())
        del meta["state_sha256"]
        (state / "state.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"training state in .*train_state is damaged .*delete that folder"):
        train_sae(dict(SMALL, epochs=4), tokens, seed=1, checkpoint_dir=tmp_path, progress=False)


def test_max_steps_stops_resumably(planted, tmp_path):
    tokens = planted[0][:100]
    full = train_sae(SMALL, tokens, seed=2, progress=False)
    partial = train_sae(SMALL, tokens, seed=2, checkpoint_dir=tmp_path, progress=False, max_steps=3)
    assert len(partial.loss_log) == 3 and not (tmp_path / "sae").exists()
    finished = train_sae(SMALL, tokens, seed=2, checkpoint_dir=tmp_path, progress=False)
    assert all(torch.equal(v, _weights(finished.sae)[k]) for k, v in _weights(full.sae).items())


def test_resuming_with_a_different_recipe_is_refused(planted, tmp_path):
    tokens = planted[0][:100]
    train_sae(SMALL, tokens, seed=0, checkpoint_dir=tmp_path, progress=False, max_steps=5)
    with pytest.raises(ValueError, match="different run.*resume=False"):
        train_sae(dict(SMALL, lr=0.01), tokens, seed=0, checkpoint_dir=tmp_path, progress=False)
    fresh = train_sae(dict(SMALL, lr=0.01), tokens, seed=0, checkpoint_dir=tmp_path, resume=False, progress=False)
    assert fresh.loss_log[0]["step"] == 0


def test_activation_normalisation_makes_training_scale_invariant(planted):
    tokens = planted[0][:100]
    recipe = dict(SMALL, epochs=1)
    small = train_sae(recipe, tokens, seed=0, progress=False).sae
    large = train_sae(recipe, tokens * 100.0, seed=0, progress=False).sae
    x = torch.from_numpy(tokens[:5].reshape(-1, D_IN))
    torch.testing.assert_close(large.W_dec, small.W_dec, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(large.encode(100 * x).detach(), 100 * small.encode(x).detach(), rtol=1e-3, atol=1e-3)


# each architecture's recipe holds the shared training fields of RECIPE and its own fields only
OWN_FIELDS = {"topk": {"k": 3, "aux_k": 8}, "relu": {"l1_coeff": 0.3}, "jumprelu": {"sparsity_coeff": 0.01},
              "matryoshka": {"k": 3, "aux_k": 8, "calibration_batches": 5}}


@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu", "matryoshka"])
def test_other_architectures_train_and_reduce_loss(planted, arch):
    shared = {key: value for key, value in RECIPE.items() if key in SAERecipeBase.model_fields}
    recipe = dict(shared, architecture=arch, epochs=10, **OWN_FIELDS[arch])
    log = train_sae(recipe, planted[0][:200], seed=0, progress=False).loss_log
    assert np.mean([e["fvu"] for e in log[-5:]]) < 0.5 * np.mean([e["fvu"] for e in log[:5]])


def test_sampler_takes_distinct_patches_per_image_each_epoch():
    sampler = PatchTokenSampler(n_images=50, n_patches=6, tokens_per_image=4, seed=7)
    epoch0 = sampler.epoch_pairs(0)
    for epoch in (0, 1):
        flat = sampler.epoch_pairs(epoch)
        images, patches = flat // 6, flat % 6
        assert np.array_equal(np.bincount(images, minlength=50), np.full(50, 4))
        for image in range(50):
            assert len(set(patches[images == image])) == 4
    assert not np.array_equal(np.sort(epoch0), np.sort(sampler.epoch_pairs(1)))
    assert np.array_equal(PatchTokenSampler(50, 6, 4, seed=7).epoch_pairs(0), epoch0)
    # batches tile the epoch stream, crossing epoch boundaries
    img, patch = sampler.batch(1, 150)  # tokens 150..299 = last 50 of epoch 0 and first 100 of epoch 1
    expected = np.sort(np.concatenate([epoch0[150:], sampler.epoch_pairs(1)[:100]]))
    assert np.array_equal(img * 6 + patch, expected)


def test_bad_token_arrays_are_rejected():
    with pytest.raises(ValueError, match=r"\[n_images, n_patches, d_in\]"):
        train_sae(SMALL, np.zeros((10, 4), dtype=np.float32), progress=False)
    with pytest.raises(ValueError, match="tokens_per_image=4 exceeds the 3 patches"):
        train_sae(SMALL, np.zeros((10, 3, 4), dtype=np.float32), progress=False)


def test_baseline_recipes_load_and_paper_recipe_matches_the_paper():
    for name in ("batchtopk", "topk", "relu", "jumprelu", "matryoshka"):
        assert load_recipe(name).architecture == name
    paper = load_recipe("batchtopk")
    assert (paper.expansion_factor, paper.k, paper.tokens_per_image) == (32, 30, 4)
    assert paper.sae_config(768)["d_sae"] == 24576  # supplement Table 4: CLIP-B/16 dictionary size


def test_recipe_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="known baselines: .*'batchtopk'"):
        load_recipe("nonexistent")
    bad_key = tmp_path / "bad.json"
    bad_key.write_text(json.dumps({"architecture": "topk", "learning_rate": 1e-3}))
    with pytest.raises(ValueError, match="learning_rate"):
        load_recipe(bad_key)
    bad_value = tmp_path / "bad2.json"
    bad_value.write_text(json.dumps({"architecture": "gated"}))
    with pytest.raises(ValueError, match="architecture"):
        load_recipe(bad_value)
    with pytest.raises(ValueError, match="d_in=16 but the tokens have d_in=8"):
        TopKRecipe(d_in=16).sae_config(8)


@pytest.mark.parametrize("scale", [None, 1.0, 0.25])
def test_encoder_starts_at_the_recipes_scale_of_the_decoder(planted, scale):
    """``encoder_init_scale`` (default: the recipes' 0.1) sets W_enc = scale x W_dec at step 0 and is recorded."""
    recipe = dict(RECIPE) if scale is None else {**RECIPE, "encoder_init_scale": scale}
    expected = 0.1 if scale is None else scale
    sae = train_sae(recipe, planted[0], seed=0, progress=False, max_steps=0).sae
    w_enc, w_dec = sae.W_enc.detach(), sae.W_dec.detach()
    assert torch.allclose(w_dec.norm(dim=1), torch.ones(sae.d_sae))
    assert torch.equal(w_enc, expected * w_dec)
    assert sae.config["encoder_init_scale"] == expected
