"""Readers for SAEs saved by other libraries (SAELens, dictionary_learning, overcomplete)."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from scopebench.sae.linear import ForeignSAE
from scopebench.sae.safetensors_io import read_safetensors
from scopebench.sae.validation import (
    ConfigBool,
    ConfigInt,
    SAEConfigError,
    check_finite,
    read_json_object,
    require_mapping,
    validate_model,
)


def _require(tensors: dict[str, torch.Tensor], names: list[str], where: Path | str) -> None:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ValueError(f"{where} lacks tensors {missing} (has {sorted(tensors)})")


def load_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)``: never runs code from the file."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} is a pickle that needs code execution to load (torch.load(weights_only=True) refused it: "
            f"{str(err).splitlines()[0]}). We never unpickle such files; re-save it as a plain state dict "
            "(torch.save(model.state_dict(), path)) or as safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable torch file ({err})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(state).__name__})")
    return state


# --- SAELens: cfg.json + sae_weights.safetensors, W_enc [d_in, d_sae], W_dec [d_sae, d_in]
SAELENS_FILES = ("cfg.json", "sae_weights.safetensors")
_SAELENS_ACTIVATIONS = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu"}
# older SAELens releases save a top-k SAE as architecture "standard" + activation_fn_str "topk"
_SAELENS_STANDARD_ACTIVATIONS = {"relu": "relu", "topk": "topk"}


class _SAELensKwargs(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    k: ConfigInt | None = Field(None, ge=1, description="a positive integer: the active latents per token")


class SAELensConfig(BaseModel):
    """The fields of SAELens' cfg.json that we read; the others (hook names, dtype, ...) are ignored."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    architecture: str = Field("standard", description=f"one of {sorted(_SAELENS_ACTIVATIONS)}")
    d_in: ConfigInt | None = Field(None, gt=0, description="a positive integer: the token dimension")
    d_sae: ConfigInt | None = Field(None, gt=0, description="a positive integer: the number of latents")
    apply_b_dec_to_input: ConfigBool = Field(True, description="true or false")
    rescale_acts_by_decoder_norm: ConfigBool = Field(False, description="false (true is not supported)")
    normalize_activations: str | None = Field("none", description="'none' (other normalisations are not supported)")
    activation_fn_str: str | None = Field(None, description=f"one of {sorted(_SAELENS_STANDARD_ACTIVATIONS)} for a "
                                          "'standard' SAE")
    k: ConfigInt | None = Field(None, ge=1, description="a positive integer: the active latents per token")
    activation_fn_kwargs: _SAELensKwargs | None = Field(None, description="an object such as {\"k\": 32}")


def load_saelens(folder: Path) -> ForeignSAE:
    where = folder / SAELENS_FILES[0]
    cfg = validate_model(SAELensConfig, read_json_object(where, "SAELens cfg.json"), str(where), "SAELens cfg.json")
    arch = cfg.architecture
    if arch not in _SAELENS_ACTIVATIONS:
        raise ValueError(
            f"{folder}: SAELens architecture {arch!r} is not supported; supported: {sorted(_SAELENS_ACTIVATIONS)}"
        )
    activation = _SAELENS_ACTIVATIONS[arch]
    if arch == "standard" and cfg.activation_fn_str is not None:
        if cfg.activation_fn_str not in _SAELENS_STANDARD_ACTIVATIONS:
            raise ValueError(f"{where}: activation_fn_str={cfg.activation_fn_str!r} is not supported; supported: "
                             f"{sorted(_SAELENS_STANDARD_ACTIVATIONS)}")
        activation = _SAELENS_STANDARD_ACTIVATIONS[cfg.activation_fn_str]
    if cfg.normalize_activations not in ("none", None):
        raise ValueError(
            f"{folder}/cfg.json: normalize_activations={cfg.normalize_activations!r} is not supported "
            "(fold the scaling into the weights and set it to 'none')"
        )
    if cfg.rescale_acts_by_decoder_norm:
        raise ValueError(f"{folder}/cfg.json: rescale_acts_by_decoder_norm=true is not supported")
    tensors = read_safetensors(folder / SAELENS_FILES[1])
    needed = ["W_enc", "W_dec", "b_enc", "b_dec"] + (["threshold"] if activation == "jumprelu" else [])
    _require(tensors, needed, folder / SAELENS_FILES[1])
    check_finite({name: tensors[name] for name in needed}, folder / SAELENS_FILES[1])
    d_in, d_sae = tensors["W_enc"].shape if tensors["W_enc"].dim() == 2 else (None, None)
    for field, value, actual in (("d_in", cfg.d_in, d_in), ("d_sae", cfg.d_sae, d_sae)):
        if value is not None and actual is not None and value != actual:
            raise ValueError(f"{where}: {field}={value} but W_enc in {SAELENS_FILES[1]} has shape "
                             f"{tuple(tensors['W_enc'].shape)} ([d_in, d_sae]); the cfg.json belongs to another SAE")
    k = cfg.k if cfg.k is not None else (cfg.activation_fn_kwargs.k if cfg.activation_fn_kwargs else None)
    if activation == "topk" and k is None:
        raise ValueError(f"{folder}/cfg.json: a topk SAE needs 'k' (or activation_fn_kwargs.k), a positive integer")
    return ForeignSAE(
        W_enc=tensors["W_enc"].T,
        b_enc=tensors["b_enc"],
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        activation=activation,  # type: ignore[arg-type]
        pre_bias=cfg.apply_b_dec_to_input,
        k=k if activation == "topk" else None,
        threshold=tensors.get("threshold") if activation == "jumprelu" else None,
        source={"format": "saelens", "source_architecture": arch},
        where=str(folder),
    )


# --- dictionary_learning: ae.pt (state dict) + config.json {"trainer": {"dict_class": ...}}
DICTIONARY_LEARNING_FILES = ("ae.pt", "config.json")


def _scalar(state: dict[str, torch.Tensor], name: str, where: Path) -> torch.Tensor:
    value = state[name]
    if value.numel() != 1:
        raise ValueError(f"{where}: tensor {name} must hold one value, got shape {tuple(value.shape)}")
    return value.reshape(())


def _dictionary_learning_k(state: dict[str, torch.Tensor], where: Path) -> int:
    value = _scalar(state, "k", where)
    if value.is_floating_point() and not bool(value == value.round()):
        raise ValueError(f"{where}: tensor k must hold an integer, got {float(value)}")
    k, d_sae = int(value), state["encoder.weight"].shape[0]
    if not 1 <= k <= d_sae:
        raise ValueError(f"{where}: tensor k = {k} must be in [1, d_sae={d_sae}] (the active latents per token)")
    return k


def load_dictionary_learning(folder: Path) -> ForeignSAE:
    config_file = folder / DICTIONARY_LEARNING_FILES[1]
    cfg = read_json_object(config_file, "dictionary_learning config.json")
    if "trainer" not in cfg:
        raise SAEConfigError(f"{config_file}: trainer: missing; expected an object with 'dict_class' "
                             "(dictionary_learning writes {\"trainer\": {\"dict_class\": ...}})")
    trainer = require_mapping(cfg["trainer"], str(config_file), "trainer")
    dict_class = trainer.get("dict_class")
    if not isinstance(dict_class, str):
        raise SAEConfigError(f"{config_file}: trainer.dict_class must be a class name string such as "
                             f"'BatchTopKSAE', got {dict_class!r}")
    state = load_torch_state_dict(folder / DICTIONARY_LEARNING_FILES[0])
    where = folder / DICTIONARY_LEARNING_FILES[0]
    source = {"format": "dictionary_learning", "source_architecture": dict_class}
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        needed = ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k"]
        _require(state, needed, where)
        if dict_class == "BatchTopKSAE":
            _require(state, ["threshold"], where)
            needed.append("threshold")
        check_finite({name: state[name] for name in needed}, where)
        k = _dictionary_learning_k(state, where)
        use_threshold = dict_class == "BatchTopKSAE" and float(_scalar(state, "threshold", where)) >= 0
        return ForeignSAE(
            W_enc=state["encoder.weight"],
            b_enc=state["encoder.bias"],
            W_dec=state["decoder.weight"].T,
            b_dec=state["b_dec"],
            activation="global_threshold" if use_threshold else "topk",
            pre_bias=True,
            k=k,
            threshold=_scalar(state, "threshold", where) if use_threshold else None,
            source=source,
            where=str(where),
        )
    if dict_class == "AutoEncoder":
        needed = ["encoder.weight", "encoder.bias", "decoder.weight", "bias"]
        _require(state, needed, where)
        check_finite({name: state[name] for name in needed}, where)
        return ForeignSAE(
            W_enc=state["encoder.weight"],
            b_enc=state["encoder.bias"],
            W_dec=state["decoder.weight"].T,
            b_dec=state["bias"],
            activation="relu",
            pre_bias=True,
            source=source,
            where=str(where),
        )
    raise ValueError(
        f"{folder}/config.json: dictionary_learning dict_class {dict_class!r} is not supported; "
        "supported: AutoEncoder, AutoEncoderTopK, BatchTopKSAE"
    )


# --- overcomplete: a TopKSAE/SAE state dict with a linear encoder; no config file exists,
# so the spec supplies top_k (and the DictionaryLayer's normalization when not "l2"):
#   {"format": "overcomplete", "path": ..., "top_k": 30, "dictionary_normalization": "l2"}
_OVERCOMPLETE_ENCODER = (("encoder.weight", "encoder.bias"), ("encoder.final_block.0.weight", "encoder.final_block.0.bias"))
_OVERCOMPLETE_DICTIONARY = ("dictionary._weights", "dictionary.dictionary")


def _rows_over(norms: torch.Tensor, largest: bool) -> torch.Tensor:
    return norms.amax(dim=0, keepdim=True) if largest else norms + 1e-8


# overcomplete's DictionaryLayer normalisations of its [n_concepts, d] weights, by name
_OVERCOMPLETE_NORMALIZATIONS = {
    "l2": lambda w: w / _rows_over(w.norm(p=2, dim=1, keepdim=True), largest=False),
    "max_l2": lambda w: w / _rows_over(w.norm(p=2, dim=1, keepdim=True), largest=True),
    "l1": lambda w: w / _rows_over(w.norm(p=1, dim=1, keepdim=True), largest=False),
    "max_l1": lambda w: w / _rows_over(w.norm(p=1, dim=1, keepdim=True), largest=True),
    "identity": lambda w: w,
}


def _overcomplete_dictionary(state: dict[str, torch.Tensor], key: str, normalization: str, path: Path) -> torch.Tensor:
    """The decoder overcomplete uses: normalization(_weights) * exp(multiplier).

    ``_weights`` is only normalised in place while training, so a state dict saved between an
    optimiser step and ``.eval()`` holds un-normalised rows; the multiplier (``use_multiplier``)
    is stored beside them.  An older ``dictionary.dictionary`` key is the decoder itself.
    """
    if key == "dictionary.dictionary":
        return state[key]
    if normalization not in _OVERCOMPLETE_NORMALIZATIONS:
        raise ValueError(f"{path}: unknown overcomplete dictionary_normalization {normalization!r}; "
                         f"use one of {sorted(_OVERCOMPLETE_NORMALIZATIONS)} (the DictionaryLayer's normalization)")
    multiplier = state.get("dictionary.multiplier", torch.zeros(()))
    return _OVERCOMPLETE_NORMALIZATIONS[normalization](state[key].double()).float() * torch.exp(multiplier.float())


class OvercompleteSpec(BaseModel):
    """``{"format": "overcomplete", "path": ..., "top_k": ..., "dictionary_normalization": ...}``; no other keys."""

    model_config = ConfigDict(extra="forbid", strict=True)

    format: Literal["overcomplete"]
    path: str | Path = Field(description="the state dict file (.pt or .safetensors)")
    top_k: ConfigInt | None = Field(None, ge=1, description="null (ReLU codes) or a positive integer: the "
                                    "active latents per token of a TopKSAE")
    dictionary_normalization: str = Field("l2", description=f"one of {sorted(_OVERCOMPLETE_NORMALIZATIONS)}")


def load_overcomplete(spec: dict[str, Any]) -> ForeignSAE:
    parsed = validate_model(OvercompleteSpec, spec, f"overcomplete SAE spec for path {spec.get('path')!r}",
                            "overcomplete spec")
    path = Path(parsed.path)
    state = read_safetensors(path) if path.suffix == ".safetensors" else load_torch_state_dict(path)
    if any(k.startswith("encoder.final_block.1.") for k in state):
        raise ValueError(f"{path}: overcomplete encoders with a normalisation layer are not supported (linear only)")
    encoder = next((pair for pair in _OVERCOMPLETE_ENCODER if pair[0] in state), None)
    dictionary = next((name for name in _OVERCOMPLETE_DICTIONARY if name in state), None)
    if encoder is None or dictionary is None:
        raise ValueError(
            f"{path}: not an overcomplete linear SAE state dict; looked for encoder "
            f"{[p[0] for p in _OVERCOMPLETE_ENCODER]} and dictionary {list(_OVERCOMPLETE_DICTIONARY)}, "
            f"found {sorted(state)}"
        )
    used = [encoder[0], encoder[1], dictionary, "dictionary.multiplier"]
    check_finite({name: state[name] for name in used if name in state}, path)
    weight = state[encoder[0]]
    bias = state.get(encoder[1], torch.zeros(weight.shape[0]))
    top_k = parsed.top_k
    return ForeignSAE(
        W_enc=weight,
        b_enc=bias,
        W_dec=_overcomplete_dictionary(state, dictionary, parsed.dictionary_normalization, path),
        b_dec=torch.zeros(weight.shape[1]),
        activation="topk" if top_k is not None else "relu",
        pre_bias=False,
        k=top_k,
        source={"format": "overcomplete"},
        where=str(path),
    )
