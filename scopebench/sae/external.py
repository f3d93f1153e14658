"""Readers for SAEs saved by other libraries (SAELens, dictionary_learning, overcomplete)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from scopebench.sae.foreign import ForeignSAE
from scopebench.sae.safetensors_io import read_safetensors


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


def load_saelens(folder: Path) -> ForeignSAE:
    cfg = json.loads((folder / SAELENS_FILES[0]).read_text())
    arch = cfg.get("architecture", "standard")
    if arch not in _SAELENS_ACTIVATIONS:
        raise ValueError(
            f"{folder}: SAELens architecture {arch!r} is not supported; supported: {sorted(_SAELENS_ACTIVATIONS)}"
        )
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise ValueError(
            f"{folder}/cfg.json: normalize_activations={cfg['normalize_activations']!r} is not supported "
            "(fold the scaling into the weights and set it to 'none')"
        )
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise ValueError(f"{folder}/cfg.json: rescale_acts_by_decoder_norm=true is not supported")
    tensors = read_safetensors(folder / SAELENS_FILES[1])
    needed = ["W_enc", "W_dec", "b_enc", "b_dec"] + (["threshold"] if arch == "jumprelu" else [])
    _require(tensors, needed, folder / SAELENS_FILES[1])
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    if arch == "topk" and not k:
        raise ValueError(f"{folder}/cfg.json: a topk SAE needs 'k' (or activation_fn_kwargs.k)")
    return ForeignSAE(
        W_enc=tensors["W_enc"].T,
        b_enc=tensors["b_enc"],
        W_dec=tensors["W_dec"],
        b_dec=tensors["b_dec"],
        activation=_SAELENS_ACTIVATIONS[arch],  # type: ignore[arg-type]
        pre_bias=bool(cfg.get("apply_b_dec_to_input", True)),
        k=int(k) if k else None,
        threshold=tensors.get("threshold"),
        source={"format": "saelens", "source_architecture": arch},
    )


# --- dictionary_learning: ae.pt (state dict) + config.json {"trainer": {"dict_class": ...}}
DICTIONARY_LEARNING_FILES = ("ae.pt", "config.json")


def load_dictionary_learning(folder: Path) -> ForeignSAE:
    cfg = json.loads((folder / DICTIONARY_LEARNING_FILES[1]).read_text())
    dict_class = (cfg.get("trainer") or {}).get("dict_class")
    state = load_torch_state_dict(folder / DICTIONARY_LEARNING_FILES[0])
    where = folder / DICTIONARY_LEARNING_FILES[0]
    source = {"format": "dictionary_learning", "source_architecture": dict_class}
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        _require(state, ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k"], where)
        if dict_class == "BatchTopKSAE":
            _require(state, ["threshold"], where)
        use_threshold = dict_class == "BatchTopKSAE" and float(state["threshold"]) >= 0
        return ForeignSAE(
            W_enc=state["encoder.weight"],
            b_enc=state["encoder.bias"],
            W_dec=state["decoder.weight"].T,
            b_dec=state["b_dec"],
            activation="global_threshold" if use_threshold else "topk",
            pre_bias=True,
            k=int(state["k"]),
            threshold=state["threshold"] if use_threshold else None,
            source=source,
        )
    if dict_class == "AutoEncoder":
        _require(state, ["encoder.weight", "encoder.bias", "decoder.weight", "bias"], where)
        return ForeignSAE(
            W_enc=state["encoder.weight"],
            b_enc=state["encoder.bias"],
            W_dec=state["decoder.weight"].T,
            b_dec=state["bias"],
            activation="relu",
            pre_bias=True,
            source=source,
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


def load_overcomplete(spec: dict[str, Any]) -> ForeignSAE:
    path = Path(spec["path"])
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
    weight = state[encoder[0]]
    bias = state.get(encoder[1], torch.zeros(weight.shape[0]))
    top_k = spec.get("top_k")
    return ForeignSAE(
        W_enc=weight,
        b_enc=bias,
        W_dec=_overcomplete_dictionary(state, dictionary, spec.get("dictionary_normalization", "l2"), path),
        b_dec=torch.zeros(weight.shape[1]),
        activation="topk" if top_k else "relu",
        pre_bias=False,
        k=int(top_k) if top_k else None,
        source={"format": "overcomplete"},
    )
