"""Native checkpoints (atomic) and external formats, each checked against the format's own math."""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from scopebench.sae import ARCHITECTURES, BatchTopKSAE, ForeignSAE, build_sae, load_sae, save_sae
from scopebench.sae import checkpoint as checkpoint_module
from scopebench.sae.base import SparseAutoencoder

D_IN, D_SAE = 6, 20


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _trained_like(arch: str) -> torch.nn.Module:
    sae = build_sae({"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "k": 3})
    sae.initialise(_gen(), data_mean=torch.randn(D_IN, generator=_gen(1)))
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(D_SAE, generator=_gen(2)))
        if isinstance(sae, BatchTopKSAE):
            sae.threshold.fill_(0.25)
    return sae.eval()


def _x(n: int = 15) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=_gen(5))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_native_round_trip(arch, tmp_path):
    sae = _trained_like(arch)
    save_sae(sae, tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "sae.safetensors"]
    loaded = load_sae(tmp_path / "ckpt", expected_d_in=D_IN)
    assert type(loaded) is type(sae) and loaded.config == sae.config
    torch.testing.assert_close(loaded.encode(_x()), sae.encode(_x()), rtol=0, atol=0)
    torch.testing.assert_close(loaded.decode(sae.encode(_x())), sae.decode(sae.encode(_x())), rtol=0, atol=0)


def test_save_replaces_atomically_and_a_crash_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    first, second = _trained_like("topk"), _trained_like("relu")
    save_sae(first, tmp_path / "ckpt")
    save_sae(second, tmp_path / "ckpt")  # overwrite
    assert load_sae(tmp_path / "ckpt").config["architecture"] == "relu"

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_sae(first, tmp_path / "ckpt")
    assert load_sae(tmp_path / "ckpt").config["architecture"] == "relu"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp folder left behind


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_weights_hash_follows_the_weights_not_the_file(tmp_path, arch):
    sae = _trained_like(arch)  # BatchTopK and JumpReLU hold 0-d / 1-d threshold buffers
    save_sae(sae, tmp_path / "ckpt")
    digest = checkpoint_module.weights_sha256(sae)
    assert checkpoint_module.weights_sha256(load_sae(tmp_path / "ckpt")) == digest  # same weights, reloaded
    with torch.no_grad():
        sae.W_dec[3, 5] += 1e-6
    assert checkpoint_module.weights_sha256(sae) != digest
    expected = hashlib.sha256()  # recomputed by hand: name, dtype, shape, then the raw bytes, in name order
    for name, tensor in sorted(sae.state_dict().items()):
        expected.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode() + tensor.detach().numpy().tobytes())
    assert checkpoint_module.weights_sha256(sae) == expected.hexdigest()


def test_native_errors_name_missing_tensors_bad_header_and_wrong_d_in(tmp_path):
    sae = _trained_like("batchtopk")
    save_sae(sae, tmp_path / "ckpt")
    with pytest.raises(ValueError, match="d_in=6 but the backbone's tokens have d_in=768"):
        load_sae(tmp_path / "ckpt", expected_d_in=768)
    tensors = {k: v for k, v in sae.state_dict().items() if k not in ("threshold", "b_enc")}
    save_file(tensors, str(tmp_path / "ckpt" / "sae.safetensors"))
    with pytest.raises(ValueError, match=r"lacks tensors \['b_enc', 'threshold'\]"):
        load_sae(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "sae.safetensors").write_bytes(b"\xff" * 7 + b"not a header")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_sae(tmp_path / "ckpt")


def test_unknown_format_lists_what_was_looked_for(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"123")
    with pytest.raises(ValueError, match=r"unknown SAE format.*weights\.bin.*cfg\.json \+ sae_weights\.safetensors.*ae\.pt"):
        load_sae(tmp_path)
    with pytest.raises(FileNotFoundError, match="no SAE at"):
        load_sae(tmp_path / "missing")


# --- SAELens: hidden_pre = (x - b_dec) @ W_enc + b_enc, W_enc [d_in, d_sae]


def _saelens_folder(tmp_path, architecture: str, **cfg) -> dict[str, torch.Tensor]:
    g = _gen(3)
    tensors = {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g),
        "W_dec": torch.randn(D_SAE, D_IN, generator=g),
        "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
        "b_dec": torch.randn(D_IN, generator=g) * 0.1,
    }
    if architecture == "jumprelu":
        tensors["threshold"] = torch.rand(D_SAE, generator=g)
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    base = {"d_in": D_IN, "d_sae": D_SAE, "apply_b_dec_to_input": True, "normalize_activations": "none", "architecture": architecture}
    (tmp_path / "cfg.json").write_text(json.dumps({**base, **cfg}))
    return tensors


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
def test_saelens_folder_matches_saelens_math(tmp_path, architecture):
    t = _saelens_folder(tmp_path, architecture, **({"k": 3} if architecture == "topk" else {}))
    sae = load_sae(tmp_path, expected_d_in=D_IN)
    assert isinstance(sae, ForeignSAE) and isinstance(sae, SparseAutoencoder)
    x = _x()
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    if architecture == "standard":
        expected = torch.relu(pre)
    elif architecture == "jumprelu":
        expected = torch.relu(pre) * (pre > t["threshold"])
    else:
        top = pre.topk(3, dim=1)
        expected = torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
    torch.testing.assert_close(sae.encode(x), expected)
    torch.testing.assert_close(sae.decode(expected), expected @ t["W_dec"] + t["b_dec"])
    torch.testing.assert_close(sae.W_dec, t["W_dec"])


def test_saelens_errors(tmp_path):
    t = _saelens_folder(tmp_path, "jumprelu")
    del t["threshold"]
    save_file(t, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match=r"lacks tensors \['threshold'\]"):
        load_sae(tmp_path)
    _saelens_folder(tmp_path, "gated")
    with pytest.raises(ValueError, match="architecture 'gated' is not supported"):
        load_sae(tmp_path)
    _saelens_folder(tmp_path, "standard", normalize_activations="expected_average_only_in")
    with pytest.raises(ValueError, match="normalize_activations"):
        load_sae(tmp_path)


def test_saelens_files_written_by_saelens_itself(tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    torch.manual_seed(0)
    theirs = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3))
    with torch.no_grad():
        theirs.b_enc.normal_()
        theirs.b_dec.normal_()
    theirs.save_model(str(tmp_path))
    ours = load_sae(tmp_path)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x))
        torch.testing.assert_close(ours.decode(ours.encode(x)), theirs.decode(theirs.encode(x)))


# --- dictionary_learning: ae.pt state dict, encoder = nn.Linear(d_in, d_sae), decoder = nn.Linear(d_sae, d_in)


def _dictionary_learning_state(threshold: float) -> dict[str, torch.Tensor]:
    g = _gen(4)
    return {
        "encoder.weight": torch.randn(D_SAE, D_IN, generator=g),
        "encoder.bias": torch.randn(D_SAE, generator=g) * 0.1,
        "decoder.weight": torch.randn(D_IN, D_SAE, generator=g),
        "b_dec": torch.randn(D_IN, generator=g) * 0.1,
        "k": torch.tensor(3, dtype=torch.int),
        "threshold": torch.tensor(threshold),
    }


@pytest.mark.parametrize("dict_class, threshold", [("BatchTopKSAE", 0.4), ("BatchTopKSAE", -1.0), ("AutoEncoderTopK", -1.0)])
def test_dictionary_learning_folder_matches_its_math(tmp_path, dict_class, threshold):
    s = _dictionary_learning_state(threshold)
    torch.save(s, tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": dict_class, "k": 3}}))
    sae = load_sae(tmp_path, expected_d_in=D_IN)
    x = _x()
    post = torch.relu((x - s["b_dec"]) @ s["encoder.weight"].T + s["encoder.bias"])
    if threshold >= 0:
        expected = post * (post > threshold)
    else:  # no threshold estimated yet: per-token top-k
        top = post.topk(3, dim=1)
        expected = torch.zeros_like(post).scatter(1, top.indices, top.values)
    torch.testing.assert_close(sae.encode(x), expected)
    torch.testing.assert_close(sae.decode(expected), expected @ s["decoder.weight"].T + s["b_dec"])


def test_dictionary_learning_saved_by_the_library_itself(tmp_path):
    batch_top_k = pytest.importorskip("dictionary_learning.trainers.batch_top_k")
    torch.manual_seed(0)
    theirs = batch_top_k.BatchTopKSAE(D_IN, D_SAE, 3)
    with torch.no_grad():
        theirs.encoder.bias.normal_()
        theirs.threshold.fill_(0.3)
    torch.save(theirs.state_dict(), tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "BatchTopKSAE", "k": 3}}))
    ours = load_sae(tmp_path)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x))
        torch.testing.assert_close(ours.decode(ours.encode(x)), theirs.decode(theirs.encode(x)))


class NeedsCode:
    """Arbitrary object: pickling it needs code execution to load."""


def test_pickles_that_need_code_execution_are_refused_with_an_explanation(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2, 2), "extra": NeedsCode()}, tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "BatchTopKSAE"}}))
    with pytest.raises(ValueError, match="needs code execution.*never unpickle"):
        load_sae(tmp_path)


def test_dictionary_learning_missing_tensors_and_unknown_class(tmp_path):
    s = _dictionary_learning_state(0.1)
    del s["b_dec"]
    torch.save(s, tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "BatchTopKSAE"}}))
    with pytest.raises(ValueError, match=r"lacks tensors \['b_dec'\]"):
        load_sae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "GatedAutoEncoder"}}))
    with pytest.raises(ValueError, match="'GatedAutoEncoder' is not supported"):
        load_sae(tmp_path)


# --- overcomplete: codes = topk(relu(x @ W.T + b)), xhat = codes @ dictionary (no decoder bias)


@pytest.mark.parametrize("dictionary_key", ["dictionary._weights", "dictionary.dictionary"])
def test_overcomplete_state_dict(tmp_path, dictionary_key):
    g = _gen(6)
    state = {
        "encoder.final_block.0.weight": torch.randn(D_SAE, D_IN, generator=g),
        "encoder.final_block.0.bias": torch.randn(D_SAE, generator=g),
        dictionary_key: torch.randn(D_SAE, D_IN, generator=g) * 3.0,  # rows far from unit norm
        "dictionary.multiplier": torch.tensor(0.4),  # use_multiplier=True
    }
    torch.save(state, tmp_path / "sae.pt")
    sae = load_sae({"format": "overcomplete", "path": str(tmp_path / "sae.pt"), "top_k": 4})
    x = _x()
    pre = torch.relu(x @ state["encoder.final_block.0.weight"].T + state["encoder.final_block.0.bias"])
    top = pre.topk(4, dim=1)
    codes = torch.zeros_like(pre).scatter(1, top.indices, top.values)
    torch.testing.assert_close(sae.encode(x), codes)
    rows = state[dictionary_key]
    if dictionary_key == "dictionary._weights":  # overcomplete decodes with l2-normalised rows x exp(multiplier)
        rows = rows / rows.norm(dim=1, keepdim=True) * math.exp(0.4)
    torch.testing.assert_close(sae.decode(codes), codes @ rows)
    identity = load_sae({"format": "overcomplete", "path": str(tmp_path / "sae.pt"), "top_k": 4,
                         "dictionary_normalization": "identity"})
    if dictionary_key == "dictionary._weights":
        torch.testing.assert_close(identity.decode(codes), codes @ state[dictionary_key] * math.exp(0.4))
        with pytest.raises(ValueError, match="unknown overcomplete dictionary_normalization 'l3'"):
            load_sae({"format": "overcomplete", "path": str(tmp_path / "sae.pt"), "dictionary_normalization": "l3"})
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="looked for encoder"):
        load_sae({"format": "overcomplete", "path": str(tmp_path / "other.pt")})


# --- custom classes via "module:Class"


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    (tmp_path / "my_custom_saes.py").write_text(textwrap.dedent("""
        import torch

        class Doubler:
            def __init__(self, d_in=4, d_sae=8):
                self.d_in, self.d_sae = d_in, d_sae
                self.W_dec = torch.eye(d_sae, d_in)
                self.config = {"architecture": "doubler", "d_in": d_in, "d_sae": d_sae}

            def encode(self, x):
                return torch.relu(torch.cat([x, -x], 1))

            def decode(self, codes):
                return codes[:, : self.d_in] - codes[:, self.d_in :]

        class Incomplete:
            def __init__(self):
                self.d_in = 4

            def encode(self, x):
                return x
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_custom_saes"
    sys.modules.pop("my_custom_saes", None)


def test_custom_class_is_instantiated_with_its_config_and_checked(custom_module):
    sae = load_sae({"class": f"{custom_module}:Doubler", "config": {"d_in": 3, "d_sae": 6}}, expected_d_in=3)
    x = _x()[:, :3]
    torch.testing.assert_close(sae.decode(sae.encode(x)), x)
    assert load_sae(f"{custom_module}:Doubler").d_in == 4
    with pytest.raises(TypeError, match=r"Incomplete does not satisfy .*the class lacks the methods \['decode'\]"):
        load_sae(f"{custom_module}:Incomplete")  # checked on the class, before it is instantiated
    with pytest.raises(ValueError, match="cannot import SAE class"):
        load_sae(f"{custom_module}:Nope")
    with pytest.raises(ValueError, match="d_in=3 but the backbone's tokens have d_in=5"):
        load_sae({"class": f"{custom_module}:Doubler", "config": {"d_in": 3, "d_sae": 6}}, expected_d_in=5)
