"""Checkpoint configs, specs and recipes are validated at load: typed, in range, finite, with errors naming
the file, the field (or tensor) and the fix.  Each case here was accepted silently, or refused with a bare
JSONDecodeError / AttributeError, before the validation existed."""
from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from scopebench.sae import build_sae, load_sae, save_sae
from scopebench.sae.validation import SAEConfigError

D_IN, D_SAE = 6, 20

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x(n: int = 15) -> torch.Tensor:
    return torch.randn(n, D_IN, generator=_gen(5))


def _native(tmp_path: Path, arch: str = "topk", **extra) -> Path:
    config = {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "k": 3}
    sae = build_sae(config)
    sae.initialise(_gen())
    folder = save_sae(sae, tmp_path / f"ckpt-{arch}")
    if extra:
        data = json.loads((folder / "config.json").read_text())
        data.update(extra)
        (folder / "config.json").write_text(json.dumps(data))
    return folder


def _edit_config(folder: Path, **changes) -> Path:
    data = json.loads((folder / "config.json").read_text())
    data.update(changes)
    (folder / "config.json").write_text(json.dumps(data))
    return folder / "config.json"


# --- native config.json: types and ranges, per architecture


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka"])
@pytest.mark.parametrize("k, problem", [
    (0, "greater than or equal to 1"), (-2, "greater than or equal to 1"), ("32", "valid integer"),
    (3.5, "valid integer"), (3.0, "valid integer"), (True, "valid integer"), (None, "valid integer"),
    (D_SAE + 1, f"exceeds d_sae={D_SAE}"),
])
def test_native_k_must_be_an_integer_in_1_to_d_sae(tmp_path, arch, k, problem):
    folder = _native(tmp_path, arch)
    config_file = _edit_config(folder, k=k)
    with pytest.raises(SAEConfigError) as err:
        load_sae(folder)
    message = str(err.value)
    assert str(config_file) in message and f"invalid {arch} SAE config" in message
    assert re.search(rf"- k: .*{re.escape(problem)}", message)
    assert "[1, " in message  # the fix: the allowed range


def test_native_k_missing_is_named(tmp_path):
    folder = _native(tmp_path, "topk")
    data = json.loads((folder / "config.json").read_text())
    del data["k"]
    (folder / "config.json").write_text(json.dumps(data))
    with pytest.raises(SAEConfigError, match=r"(?s)config\.json: invalid topk SAE config.*- k: missing; expected an "
                                             r"integer in \[1, d_sae\]"):
        load_sae(folder)


@pytest.mark.parametrize("field, value, problem", [
    ("d_in", "6", "valid integer"), ("d_in", 0, "greater than 0"), ("d_in", 6.0, "valid integer"),
    ("d_sae", -20, "greater than 0"), ("d_sae", "20", "valid integer"), ("d_sae", 0, "greater than 0"),
])
def test_native_sizes_must_be_positive_integers(tmp_path, field, value, problem):
    folder = _native(tmp_path, "relu")
    config_file = _edit_config(folder, **{field: value})
    pattern = rf"(?s){re.escape(str(config_file))}.*- {field}: .*{problem}.*positive integer"
    with pytest.raises(SAEConfigError, match=pattern):
        load_sae(folder)


@pytest.mark.parametrize("arch, field, value, problem", [
    ("jumprelu", "init_threshold", float("nan"), "finite number"),
    ("jumprelu", "init_threshold", float("inf"), "finite number"),
    ("jumprelu", "init_threshold", 0.0, "greater than 0"),
    ("jumprelu", "bandwidth", -0.05, "greater than 0"),
    ("jumprelu", "sparsity_coeff", "0.001", "valid number"),
    ("relu", "l1_coeff", -1.0, "greater than or equal to 0"),
    ("relu", "l1_coeff", True, "valid number"),
    ("topk", "aux_k", 0, "greater than or equal to 1"),
    ("batchtopk", "aux_k_coeff", float("nan"), "finite number"),
    ("matryoshka", "group_fractions", [0.5, 0.25, 1.0], "must strictly increase"),
    ("matryoshka", "group_fractions", [0.25, 0.5], "must strictly increase"),
    ("matryoshka", "group_fractions", [0.0, 1.0], "fractions in (0, 1]"),
    ("matryoshka", "group_fractions", [0.5, 0.51, 1.0], "round to the same size"),
    ("matryoshka", "group_fractions", "all", "valid list"),
    ("matryoshka", "group_weights", [1.0], "one weight >= 0 per entry"),
    ("matryoshka", "group_weights", [-1.0, 1.0, 1.0, 1.0, 1.0], "one weight >= 0 per entry"),
])
def test_native_architecture_hyperparameters_are_checked(tmp_path, arch, field, value, problem):
    folder = _native(tmp_path, arch)
    config_file = _edit_config(folder, **{field: value})  # json writes NaN / Infinity, which json.loads accepts
    with pytest.raises(SAEConfigError) as err:
        load_sae(folder)
    message = str(err.value)
    assert str(config_file) in message and field in message and problem in message


def test_native_unknown_architecture_names_the_file_and_field(tmp_path):
    folder = _native(tmp_path, "relu")
    for value in ("gated", 5, None):
        config_file = _edit_config(folder, architecture=value)
        with pytest.raises(SAEConfigError, match=rf"{re.escape(str(config_file))}: unknown SAE architecture "
                                                 rf"{re.escape(repr(value))} \(field 'architecture'\); known: "):
            load_sae(folder)


def test_native_unread_keys_are_kept_and_valid_configs_still_load(tmp_path):
    folder = _native(tmp_path, "matryoshka", lr=0.0003, note="recorded with the weights", group_weights=None)
    sae = load_sae(folder)
    assert sae.config["note"] == "recorded with the weights" and sae.k == 3


@pytest.mark.parametrize("text, problem", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object .* got a JSON array"),
    ('"topk"', "must hold a JSON object .* got a JSON string"),
    ('{"architecture": "topk", "k": 3, "k": 0, "d_in": 6, "d_sae": 20}', r"duplicate keys \['k'\]"),
])
def test_malformed_native_config_names_the_file(tmp_path, text, problem):
    folder = _native(tmp_path, "topk")
    (folder / "config.json").write_text(text)
    with pytest.raises(SAEConfigError, match=rf"{re.escape(str(folder / 'config.json'))}:? {problem}"):
        load_sae(folder)


def test_non_utf8_native_config_names_the_file(tmp_path):
    folder = _native(tmp_path, "topk")
    (folder / "config.json").write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(SAEConfigError, match=rf"{re.escape(str(folder / 'config.json'))} is not UTF-8 text"):
        load_sae(folder)


def test_build_sae_validates_programmatic_configs_too():
    import numpy as np

    with pytest.raises(SAEConfigError, match=r"SAE config: invalid topk SAE config:\n  - k: Input should be a valid "
                                             r"integer \(got '4'\)"):
        build_sae({"architecture": "topk", "d_in": 4, "d_sae": 8, "k": "4"})
    with pytest.raises(SAEConfigError, match="expansion_factor: Input should be greater than 0"):
        build_sae({"architecture": "relu", "d_in": 4, "expansion_factor": 0})
    with pytest.raises(SAEConfigError, match="d_sae: missing; set 'd_sae'"):
        build_sae({"architecture": "relu", "d_in": 4})
    sae = build_sae({"architecture": "topk", "d_in": np.int64(4), "d_sae": np.int64(8), "k": np.int32(2)})
    assert (sae.d_in, sae.d_sae, type(sae.d_in)) == (4, 8, int)  # numpy integers are integers


# --- NaN / inf weights are refused by every loader, naming the tensor


@pytest.mark.parametrize("arch, tensor", [("topk", "W_enc"), ("relu", "b_dec"), ("batchtopk", "threshold"),
                                          ("jumprelu", "log_threshold"), ("matryoshka", "W_dec")])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_native_non_finite_weights_are_refused(tmp_path, arch, tensor, bad):
    folder = _native(tmp_path, arch)
    tensors = {name: t.clone() for name, t in load_sae(folder).state_dict().items()}
    tensors[tensor].view(-1)[0] = bad
    save_file(tensors, str(folder / "sae.safetensors"))
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder / 'sae.safetensors'))}: non-finite weights in "
                                         rf"tensor\(s\) {tensor} \("):
        load_sae(folder)


def _saelens(tmp_path: Path, architecture: str = "standard", /, **cfg) -> dict[str, torch.Tensor]:
    g = _gen(3)
    tensors = {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g),
        "W_dec": torch.randn(D_SAE, D_IN, generator=g),
        "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
        "b_dec": torch.randn(D_IN, generator=g) * 0.1 + 1.0,
    }
    if architecture == "jumprelu":
        tensors["threshold"] = torch.rand(D_SAE, generator=g)
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    base = {"d_in": D_IN, "d_sae": D_SAE, "normalize_activations": "none", "architecture": architecture}
    (tmp_path / "cfg.json").write_text(json.dumps({**base, **cfg}))
    return tensors


@pytest.mark.parametrize("tensor", ["W_enc", "W_dec", "b_enc", "b_dec", "threshold"])
def test_saelens_non_finite_weights_are_refused(tmp_path, tensor):
    tensors = _saelens(tmp_path, "jumprelu")
    tensors[tensor].view(-1)[3] = float("nan")
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(ValueError, match=rf"sae_weights\.safetensors: non-finite weights in tensor\(s\) {tensor} "
                                         r"\(1 NaN, 0 inf"):
        load_sae(tmp_path)


def _dictionary_learning(tmp_path: Path, dict_class: str = "BatchTopKSAE", **overrides) -> dict[str, torch.Tensor]:
    g = _gen(4)
    state = {
        "encoder.weight": torch.randn(D_SAE, D_IN, generator=g),
        "encoder.bias": torch.randn(D_SAE, generator=g) * 0.1,
        "decoder.weight": torch.randn(D_IN, D_SAE, generator=g),
        "b_dec": torch.randn(D_IN, generator=g) * 0.1,
        "bias": torch.randn(D_IN, generator=g) * 0.1,
        "k": torch.tensor(3, dtype=torch.int),
        "threshold": torch.tensor(0.2),
        **overrides,
    }
    torch.save(state, tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": dict_class, "k": 3}}))
    return state


@pytest.mark.parametrize("dict_class, tensor", [("BatchTopKSAE", "encoder.weight"), ("BatchTopKSAE", "threshold"),
                                                ("AutoEncoderTopK", "b_dec"), ("AutoEncoder", "bias"),
                                                ("AutoEncoder", "decoder.weight")])
def test_dictionary_learning_non_finite_weights_are_refused(tmp_path, dict_class, tensor):
    state = _dictionary_learning(tmp_path, dict_class)
    state[tensor].view(-1)[0] = float("inf")
    torch.save(state, tmp_path / "ae.pt")
    pattern = rf"ae\.pt: non-finite weights in tensor\(s\) {re.escape(tensor)} \(0 NaN, 1 inf"
    with pytest.raises(ValueError, match=pattern):
        load_sae(tmp_path)


def _overcomplete(tmp_path: Path, **overrides) -> Path:
    g = _gen(6)
    state = {
        "encoder.weight": torch.randn(D_SAE, D_IN, generator=g),
        "encoder.bias": torch.randn(D_SAE, generator=g),
        "dictionary._weights": torch.randn(D_SAE, D_IN, generator=g),
        "dictionary.multiplier": torch.tensor(0.0),
        **overrides,
    }
    torch.save(state, tmp_path / "sae.pt")
    return tmp_path / "sae.pt"


@pytest.mark.parametrize("tensor", ["encoder.weight", "encoder.bias", "dictionary._weights", "dictionary.multiplier"])
def test_overcomplete_non_finite_weights_are_refused(tmp_path, tensor):
    path = _overcomplete(tmp_path)
    state = torch.load(path, weights_only=True)
    state[tensor].view(-1)[0] = float("nan")
    torch.save(state, path)
    with pytest.raises(ValueError, match=rf"sae\.pt: non-finite weights in tensor\(s\) {re.escape(tensor)} \(1 NaN"):
        load_sae({"format": "overcomplete", "path": str(path), "top_k": 4})


def test_overcomplete_decoder_that_overflows_float32_is_refused(tmp_path):
    path = _overcomplete(tmp_path, **{"dictionary.multiplier": torch.tensor(100.0)})  # exp(100) > float32 max
    with pytest.raises(ValueError, match=r"sae\.pt: non-finite \(NaN/inf\) values in \['W_dec'\]"):
        load_sae({"format": "overcomplete", "path": str(path), "top_k": 4})


# --- SAELens cfg.json: booleans are booleans, numbers are numbers


@pytest.mark.parametrize("value, pre_bias", [(True, True), (False, False), ("true", True), ("false", False),
                                             ("False", False), ("TRUE", True)])
def test_saelens_apply_b_dec_to_input_reads_booleans_and_true_false_strings(tmp_path, value, pre_bias):
    t = _saelens(tmp_path, apply_b_dec_to_input=value)
    sae = load_sae(tmp_path)
    assert sae.pre_bias is pre_bias
    x = _x()
    centred = x - t["b_dec"] if pre_bias else x
    torch.testing.assert_close(sae.encode(x), torch.relu(centred @ t["W_enc"] + t["b_enc"]))


@pytest.mark.parametrize("field", ["apply_b_dec_to_input", "rescale_acts_by_decoder_norm"])
@pytest.mark.parametrize("value", ["no", "yes", "0", 0, 1, None, [], "tru"])
def test_saelens_booleans_refuse_anything_else(tmp_path, field, value):
    _saelens(tmp_path, **{field: value})
    with pytest.raises(SAEConfigError, match=rf"(?s)cfg\.json: invalid SAELens cfg\.json:.*- {field}: "
                                             r".*(must be a boolean: true or false|valid boolean)"):
        load_sae(tmp_path)


def test_saelens_rescale_false_string_is_false_not_truthy(tmp_path):
    _saelens(tmp_path, rescale_acts_by_decoder_norm="false")
    assert load_sae(tmp_path).pre_bias is True  # loads: "false" is false (it was refused as truthy before)
    _saelens(tmp_path, rescale_acts_by_decoder_norm="true")
    with pytest.raises(ValueError, match="rescale_acts_by_decoder_norm=true is not supported"):
        load_sae(tmp_path)


@pytest.mark.parametrize("cfg, problem", [
    ({"k": "3"}, r"- k: Input should be a valid integer \(got '3'\)"),
    ({"k": 0}, r"- k: Input should be greater than or equal to 1"),
    ({"k": 2.5}, r"- k: Input should be a valid integer"),
    ({"k": True}, r"- k: Input should be a valid integer"),
    ({"activation_fn_kwargs": {"k": "3"}}, r"- activation_fn_kwargs\.k: Input should be a valid integer"),
    ({"activation_fn_kwargs": [3]}, r"- activation_fn_kwargs: Input should be"),
    ({"architecture": 5}, r"- architecture: Input should be a valid string"),
    ({"normalize_activations": False}, r"- normalize_activations: Input should be a valid string"),
    ({"d_in": "6"}, r"- d_in: Input should be a valid integer"),
])
def test_saelens_fields_are_typed(tmp_path, cfg, problem):
    _saelens(tmp_path, "topk", **{"k": 3, **cfg})
    with pytest.raises(SAEConfigError, match=rf"(?s){re.escape(str(tmp_path / 'cfg.json'))}: invalid SAELens "
                                             rf"cfg\.json:.*{problem}"):
        load_sae(tmp_path)


def test_saelens_k_above_d_sae_and_sizes_that_contradict_the_weights(tmp_path):
    _saelens(tmp_path, "topk", k=D_SAE + 1)
    with pytest.raises(ValueError, match=rf"a top-k SAE needs k, an integer in \[1, d_sae={D_SAE}\]; got {D_SAE + 1}"):
        load_sae(tmp_path)
    _saelens(tmp_path, "standard", d_sae=D_SAE * 2)
    with pytest.raises(ValueError, match=rf"cfg\.json: d_sae={D_SAE * 2} but W_enc in sae_weights\.safetensors has "
                                         rf"shape \({D_IN}, {D_SAE}\)"):
        load_sae(tmp_path)


def test_saelens_standard_with_topk_activation_fn_is_a_topk_sae(tmp_path):
    t = _saelens(tmp_path, "standard", activation_fn_str="topk", activation_fn_kwargs={"k": 3})
    sae = load_sae(tmp_path)
    x = _x()
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    top = pre.topk(3, dim=1)
    torch.testing.assert_close(sae.encode(x), torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values)))
    _saelens(tmp_path, "standard", activation_fn_str="tanh-relu")
    with pytest.raises(ValueError, match=r"activation_fn_str='tanh-relu' is not supported; supported: "
                                         r"\['relu', 'topk'\]"):
        load_sae(tmp_path)


@pytest.mark.parametrize("text, problem", [("{", "is not valid JSON"), ("[]", "must hold a JSON object"),
                                           ("null", "must hold a JSON object")])
def test_malformed_saelens_cfg_names_the_file(tmp_path, text, problem):
    _saelens(tmp_path)
    (tmp_path / "cfg.json").write_text(text)
    with pytest.raises(SAEConfigError, match=rf"{re.escape(str(tmp_path / 'cfg.json'))} {problem}"):
        load_sae(tmp_path)


# --- dictionary_learning config.json and state-dict scalars


@pytest.mark.parametrize("config, problem", [
    ("[1]", "must hold a JSON object"),
    ("{oops", "is not valid JSON"),
    (json.dumps({"trainer": "BatchTopKSAE"}), "trainer must be a JSON object"),
    (json.dumps({"trainer": {"dict_class": 3}}), "trainer.dict_class must be a class name string"),
    (json.dumps({"dict_class": "BatchTopKSAE"}), "trainer: missing"),
])
def test_malformed_dictionary_learning_config_names_the_file_and_field(tmp_path, config, problem):
    _dictionary_learning(tmp_path)
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(SAEConfigError, match=rf"{re.escape(str(tmp_path / 'config.json'))}:? {re.escape(problem)}"):
        load_sae(tmp_path)


@pytest.mark.parametrize("k, problem", [(torch.tensor(0), r"tensor k = 0 must be in \[1, d_sae=20\]"),
                                        (torch.tensor(21), r"tensor k = 21 must be in \[1, d_sae=20\]"),
                                        (torch.tensor(2.5), "tensor k must hold an integer"),
                                        (torch.tensor([3, 3]), r"tensor k must hold one value, got shape \(2,\)")])
def test_dictionary_learning_k_is_checked(tmp_path, k, problem):
    _dictionary_learning(tmp_path, "AutoEncoderTopK", k=k)
    with pytest.raises(ValueError, match=rf"ae\.pt: {problem}"):
        load_sae(tmp_path)


# --- overcomplete spec


@pytest.mark.parametrize("extra, problem", [
    ({"top_k": 0}, r"top_k: Input should be greater than or equal to 1 \(got 0\)"),
    ({"top_k": "4"}, r"top_k: Input should be a valid integer \(got '4'\)"),
    ({"top_k": True}, r"top_k: Input should be a valid integer"),
    ({"top_k": 4.0}, r"top_k: Input should be a valid integer"),
    ({"topk": 4}, r"topk: unknown field \(got 4\); did you mean 'top_k'\?"),
    ({"dictionary_normalization": 2}, r"dictionary_normalization: Input should be a valid string"),
])
def test_overcomplete_spec_is_typed_and_closed(tmp_path, extra, problem):
    path = _overcomplete(tmp_path)
    with pytest.raises(SAEConfigError, match=rf"(?s)overcomplete SAE spec for path .*sae\.pt.*{problem}"):
        load_sae({"format": "overcomplete", "path": str(path), **extra})


def test_overcomplete_without_top_k_is_relu(tmp_path):
    path = _overcomplete(tmp_path)
    sae = load_sae({"format": "overcomplete", "path": str(path), "top_k": None})
    assert sae.activation == "relu" and sae.k is None


# --- custom classes: the imported object is checked before anything is called


@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    (tmp_path / "probe_saes.py").write_text(textwrap.dedent("""
        import torch

        CALLS = []

        def factory(**kwargs):
            CALLS.append(("factory", kwargs))

        class NoMethods:
            def __init__(self, **kwargs):
                CALLS.append(("NoMethods", kwargs))

        class Good:
            def __init__(self, d_in=4, d_sae=8, bad=None):
                CALLS.append(("Good", d_in, d_sae))
                self.d_in, self.d_sae = d_in, d_sae
                self.W_dec = torch.eye(d_sae, d_in) if bad != "shape" else torch.eye(d_in, d_sae)
                if bad == "nan":
                    self.W_dec[0, 0] = float("nan")
                self.config = {"d_in": d_in} if bad != "config" else ["not", "a", "dict"]

            def encode(self, x):
                return torch.relu(x @ self.W_dec.T)

            def decode(self, codes):
                return codes @ self.W_dec

        class StrDims(Good):
            def __init__(self):
                super().__init__()
                self.d_in = "4"

        class Module(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.d_in, self.d_sae = 2, 3
                self.W_dec = torch.nn.Parameter(torch.zeros(3, 2))
                self.config = {}

            def encode(self, x):
                return x @ self.W_dec.T

            def decode(self, codes):
                return codes @ self.W_dec

        INSTANCE = Good()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import probe_saes

    probe_saes.CALLS.clear()
    yield probe_saes
    sys.modules.pop("probe_saes", None)


def test_custom_targets_that_are_not_sae_classes_are_refused_before_being_called(probe_module):
    with pytest.raises(TypeError, match=r"probe_saes:factory is a function, not a class"):
        load_sae({"class": "probe_saes:factory", "config": {"d_in": 4}})
    with pytest.raises(TypeError, match=r"probe_saes:INSTANCE is a Good, not a class"):
        load_sae("probe_saes:INSTANCE")
    with pytest.raises(TypeError, match=r"NoMethods does not satisfy .*the class lacks the methods "
                                        r"\['encode', 'decode'\]"):
        load_sae({"class": "probe_saes:NoMethods", "config": {"x": 1}})
    assert probe_module.CALLS == []  # nothing imported was called


def test_custom_config_must_fit_the_class_before_it_is_instantiated(probe_module):
    with pytest.raises(TypeError, match=r"'config' \['d_model'\] does not fit Good\(d_in=4, d_sae=8, bad=None\)"):
        load_sae({"class": "probe_saes:Good", "config": {"d_model": 4}})
    with pytest.raises(SAEConfigError, match=r"config: Input should be a valid dictionary \(got \[4, 8\]\)"):
        load_sae({"class": "probe_saes:Good", "config": [4, 8]})
    with pytest.raises(SAEConfigError, match=r"weight: unknown field .*did you mean 'weights'\?"):
        load_sae({"class": "probe_saes:Good", "weight": "w.safetensors"})
    with pytest.raises(SAEConfigError, match=r"class: String should match pattern .*; expected 'module:Class'"):
        load_sae({"class": "probe_saes.Good"})
    assert probe_module.CALLS == []
    assert load_sae({"class": "probe_saes:Good", "config": {"d_in": 3, "d_sae": 5}}).d_sae == 5


@pytest.mark.parametrize("target, config, problem", [
    ("probe_saes:Good", {"bad": "shape"}, r"W_dec must be a tensor of shape \[d_sae, d_in\] = \[8, 4\], got \(4, 8\)"),
    ("probe_saes:Good", {"bad": "config"}, "config must be a dict, got list"),
    ("probe_saes:Good", {"d_in": 0}, "d_in must be a positive int, got 0"),
    ("probe_saes:StrDims", None, "d_in must be a positive int, got '4'"),
])
def test_custom_instances_are_checked_against_the_protocol(probe_module, target, config, problem):
    with pytest.raises(TypeError, match=rf"does not satisfy scopebench\.sae\.base\.SparseAutoencoder: .*{problem}"):
        load_sae({"class": target, **({"config": config} if config is not None else {})})


def test_custom_weights_must_be_finite_and_loadable(probe_module, tmp_path):
    with pytest.raises(ValueError, match="W_dec has NaN/inf values"):
        load_sae({"class": "probe_saes:Good", "config": {"bad": "nan"}})
    save_file({"W_dec": torch.full((3, 2), float("nan"))}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match=r"w\.safetensors: non-finite weights in tensor\(s\) W_dec \(6 NaN"):
        load_sae({"class": "probe_saes:Module", "weights": str(tmp_path / "w.safetensors")})
    with pytest.raises(TypeError, match="gives 'weights' but Good has no load_state_dict"):
        load_sae({"class": "probe_saes:Good", "weights": str(tmp_path / "w.safetensors")})
    save_file({"W_dec": torch.ones(3, 2)}, str(tmp_path / "w.safetensors"))
    loaded = load_sae({"class": "probe_saes:Module", "weights": str(tmp_path / "w.safetensors")})
    assert float(loaded.W_dec.detach().sum()) == 6


# --- recipes: every named recipe validated at once


def _recipe(folder: Path, name: str, content: str | dict) -> Path:
    path = folder / f"{name}.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_check_recipes_accepts_the_baselines():
    from scopebench.sae.recipe import BASELINES_DIR, check_recipes

    names = sorted(p.stem for p in BASELINES_DIR.glob("*.json"))
    assert len(names) >= 5
    check_recipes(names)


def test_check_recipes_names_every_bad_recipe_and_its_problem_in_one_error(tmp_path):
    from scopebench.sae.recipe import RecipeError, check_recipes

    good = _recipe(tmp_path, "good", {"architecture": "topk", "k": 8})
    syntax = _recipe(tmp_path, "syntax", "{architecture: topk}")
    typo = _recipe(tmp_path, "typo", {"architecture": "topk", "expansion": 32})
    rng = _recipe(tmp_path, "range", {"architecture": "relu", "lr": -1})
    listed = _recipe(tmp_path, "listed", "[]")
    missing = tmp_path / "missing.json"
    with pytest.raises(RecipeError) as err:
        check_recipes([str(p) for p in (good, syntax, typo, rng, listed, missing)])
    message = str(err.value)
    assert message.startswith("5 of 6 SAE recipes are invalid")
    assert f"recipe {syntax} is not valid JSON" in message
    assert (f"invalid SAE recipe {typo}:\n  - expansion: unknown field (got 32); did you mean 'expansion_factor'?"
            in message)
    assert f"invalid SAE recipe {rng}:\n  - lr: Input should be greater than 0 (got -1)" in message
    assert f"recipe {listed} must hold a JSON object" in message and f"no SAE recipe at {missing}" in message
    assert f"{good}" not in message


@pytest.mark.parametrize("fields, problem", [
    ({"architecture": "topk", "lr": float("inf")}, "lr: Input should be a finite number"),
    ({"architecture": "topk", "aux_k_coeff": float("nan")}, "aux_k_coeff: Input should be a finite number"),
    ({"architecture": "topk", "adam_betas": [0.9, 1.5]}, r"adam_betas must be two numbers in [0, 1)"),
    ({"architecture": "topk", "d_sae": 16, "k": 32}, "k: 32 exceeds d_sae=16; expected an integer in [1, 16]"),
    ({"architecture": "matryoshka", "d_sae": 8, "k": 2, "group_fractions": [0.1, 0.15, 1.0]}, "round to the same size"),
    ({"architecture": "matryoshka", "group_weights": [1, 1, 1, 1, -1]}, "group_weights: [1.0, 1.0, 1.0, 1.0, -1.0] "
     "must be null or one weight >= 0 per entry"),
])
def test_recipe_ranges_are_checked_before_training(tmp_path, fields, problem):
    from scopebench.sae.recipe import RecipeError, check_recipes

    path = _recipe(tmp_path, "bad", fields)
    with pytest.raises(RecipeError, match=rf"invalid SAE recipe {re.escape(str(path))}:\n.*{re.escape(problem)}"):
        check_recipes([str(path)])
