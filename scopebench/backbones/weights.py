"""Offline-first resolution, identity and reading of pretrained weight files.

Resolution order for a backbone (first hit wins, nothing ever touches the network):

1. an explicit file: ``weights=`` or ``weights_map[name]`` (the CLI's ``--weights NAME=PATH``);
2. the config file named by ``$SCOPEBENCH_WEIGHTS_CONFIG``: JSON or TOML mapping
   backbone name -> file path (relative paths are relative to the config file), read by
   :func:`read_config_file`, the one parser of that file (the pytest plugin's ``--weights-config`` too);
3. the local Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the
   ``huggingface_hub`` default), looked up with ``try_to_load_from_cache`` and, failing
   that, a scan of the repo's snapshot folders.

Anything else raises :class:`WeightsNotFound`, whose message says which file is expected
and every way to provide it.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import torch

from scopebench.backbones.sources import get_source
from scopebench.backbones.spec import BackboneSpec

CONFIG_ENV = "SCOPEBENCH_WEIGHTS_CONFIG"
_SAFETENSORS_SUFFIXES = (".safetensors",)
_TORCH_SUFFIXES = (".bin", ".pt", ".pth")


class WeightsNotFound(FileNotFoundError):
    """No weight file for a backbone could be found locally."""


def candidate_filenames(spec: BackboneSpec) -> tuple[str, ...]:
    """Files of ``spec.hf_hub_id`` that hold the weights, safetensors first."""
    return get_source(spec.source).weight_files(spec)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _from_hf_cache(repo_id: str, filename: str, cache_dir: Path) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id=repo_id, filename=filename, cache_dir=str(cache_dir))
    if isinstance(hit, str) and Path(hit).is_file():
        return Path(hit)
    # Downloads pinned to a revision have no refs/main: take the newest snapshot holding the file.
    snapshots = cache_dir / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    found = [p for p in snapshots.glob(f"*/{filename}") if p.is_file()] if snapshots.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


class WeightsConfigError(ValueError):
    """A weights config file whose content cannot be used; the message names the file and what it needs."""


CONFIG_SUFFIXES = (".json", ".toml")
_CONFIG_EXAMPLE = '{"clip-b16": "/data/clip-b16.safetensors"}'


def _load_toml(text: str, where: str) -> object:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise WeightsConfigError(f"{where}: TOML needs Python 3.11+ (or the tomli package); write the same "
                                     "mapping as JSON") from None
    return tomllib.loads(text)


def read_config_file(path: Path, origin: str = f"${CONFIG_ENV}") -> dict[str, Path]:
    """The mapping backbone name -> weights file of a ``.json`` or ``.toml`` config file.

    The one parser of the weights config, used by ``resolve_weights`` (``$SCOPEBENCH_WEIGHTS_CONFIG``)
    and by the pytest plugin (``--weights-config``; ``origin`` names the flag or variable in messages).
    Relative paths (``~`` expanded) are relative to the file's folder; whether the files exist and
    the names are backbones is for the caller. A file that cannot be read raises
    :class:`WeightsNotFound`, one with bad content :class:`WeightsConfigError` (a ``ValueError``).
    """
    path = Path(path)
    where = f"{origin} {path}"
    fix = "fix the path or unset the variable" if origin.startswith("$") else "fix the path"
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "no such file"
        raise WeightsNotFound(f"{where}: {what}; {fix}")
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise WeightsConfigError(f"{where}: a weights config must end in .json or .toml, mapping backbone names "
                                 f"to files, e.g. {_CONFIG_EXAMPLE}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WeightsNotFound(f"{where}: cannot be read ({exc}); {fix}") from None
    except UnicodeDecodeError as exc:
        raise WeightsConfigError(f"{where}: is not UTF-8 text ({exc})") from None
    try:
        data = _load_toml(text, where) if path.suffix.lower() == ".toml" else json.loads(text)
    except WeightsConfigError:
        raise
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise WeightsConfigError(f"{where}: cannot be parsed ({exc}); expected a mapping "
                                 f"{_CONFIG_EXAMPLE}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) and v for v in data.values()):
        got = f"a {type(data).__name__}" if not isinstance(data, dict) else "an entry whose value is not a path"
        raise WeightsConfigError(f"{where}: must map backbone names to file paths (a flat mapping), e.g. "
                                 f"{_CONFIG_EXAMPLE}; got {got}")
    return {name: path.parent / Path(value).expanduser() for name, value in data.items()}


def _explicit(spec: BackboneSpec, path: str | Path, origin: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsNotFound(f"weights for {spec.name!r} given by {origin} do not exist: {file}; "
                              "fix the path (expected a .safetensors, .bin, .pt or .pth file)")
    return file


def missing_message(spec: BackboneSpec) -> str:
    files = " or ".join(candidate_filenames(spec))
    first = candidate_filenames(spec)[0]
    return (
        f"no weights found for backbone {spec.name!r} ({spec.source} {spec.model_id}, tag {spec.pretrained_tag}). "
        f"Expected file: {files} from Hugging Face repo {spec.hf_hub_id}. Provide it in one of these ways: "
        f"(1) pass it explicitly, e.g. --weights {spec.name}=/path/to/{first}; "
        f"(2) list it in a JSON or TOML file mapping names to paths and set ${CONFIG_ENV} to that file; "
        f"(3) pre-populate the Hugging Face cache ({hf_cache_dir()}) on a machine with internet, e.g. "
        f"`huggingface-cli download {spec.hf_hub_id} {first}`, and copy the cache here "
        "(set HF_HUB_CACHE if it lives elsewhere). Nothing is downloaded at run time."
    )


def resolve_weights(
    spec: BackboneSpec,
    *,
    weights: str | Path | None = None,
    weights_map: Mapping[str, str | Path] | None = None,
) -> Path:
    """Local path of ``spec``'s weight file, or :class:`WeightsNotFound` (never a network call)."""
    if weights is not None:
        return _explicit(spec, weights, "weights=")
    if weights_map and spec.name in weights_map:
        return _explicit(spec, weights_map[spec.name], f"--weights {spec.name}=...")
    config = os.environ.get(CONFIG_ENV)
    if config:
        entries = read_config_file(Path(config).expanduser())
        if spec.name in entries:
            return _explicit(spec, entries[spec.name], f"${CONFIG_ENV} ({config})")
    if spec.hf_hub_id:
        cache_dir = hf_cache_dir()
        for filename in candidate_filenames(spec):
            hit = _from_hf_cache(spec.hf_hub_id, filename, cache_dir)
            if hit is not None:
                return hit
    raise WeightsNotFound(missing_message(spec))


_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def weights_id(path: str | Path) -> str:
    """``"sha256:<hex>"`` of a weight file, memoised by (real path, size, mtime)."""
    real = Path(path).resolve()
    stat = real.stat()
    key = (str(real), stat.st_size, stat.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    digest = hashlib.sha256()
    with real.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    result = f"sha256:{digest.hexdigest()}"
    with _HASH_LOCK:
        _HASHES[key] = result
    return result


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weight file: safetensors, or ``torch.load(weights_only=True)`` (never unpickles code)."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix in _SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(file), device="cpu")
        except Exception as exc:  # SafetensorError: truncated file, bad header
            raise ValueError(f"cannot read {file} as safetensors ({exc}); is the download complete?") from exc
    if suffix in _TORCH_SUFFIXES:
        try:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickles with code, TorchScript archives, truncated files
            raise ValueError(f"cannot read {file} as a plain tensor checkpoint ({exc}); convert it to "
                             ".safetensors or a state_dict saved with torch.save") from exc
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict):
            raise ValueError(f"{file} holds a {type(loaded).__name__}, not a state_dict of tensors")
        return {k.removeprefix("module."): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    raise ValueError(f"unsupported weight file {file}: use .safetensors, .bin, .pt or .pth")
