"""Native SAE checkpoints: a folder with ``config.json`` + ``sae.safetensors``."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from safetensors.torch import save_file

from scopebench.atomic import write_folder_atomic
from scopebench.sae.arch import build_sae
from scopebench.sae.dictionary import DictionarySAE
from scopebench.sae.safetensors_io import read_safetensors
from scopebench.sae.validation import check_finite, read_json_object

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "sae.safetensors"


def save_sae(sae: DictionarySAE, path: str | Path) -> Path:
    """Write ``sae`` to the folder ``path`` (replaced atomically: temp folder + rename)."""
    path = Path(path)
    tensors = {name: t.detach().cpu().contiguous() for name, t in sae.state_dict().items()}

    def write_config(file: Path) -> None:
        file.write_text(json.dumps(sae.config, indent=2))

    write_folder_atomic(path, {CONFIG_FILE: write_config, WEIGHTS_FILE: lambda f: save_file(tensors, str(f))})
    return path


def is_native_checkpoint(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def load_native(path: str | Path) -> DictionarySAE:
    path = Path(path)
    config = read_json_object(path / CONFIG_FILE, "native SAE config")
    sae = build_sae(config, source=str(path / CONFIG_FILE))
    tensors = read_safetensors(path / WEIGHTS_FILE)
    expected = sae.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"{path / WEIGHTS_FILE} lacks tensors {missing} needed by a {config['architecture']} SAE")
    for name, tensor in tensors.items():
        if name in expected and tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"{path / WEIGHTS_FILE}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"config.json implies {tuple(expected[name].shape)}"
            )
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ValueError(f"{path / WEIGHTS_FILE} has unexpected tensors {unexpected} for a {config['architecture']} SAE")
    check_finite(tensors, path / WEIGHTS_FILE)
    sae.load_state_dict(tensors)
    return sae.eval()


def weights_sha256(sae: torch.nn.Module) -> str:
    """sha256 over the SAE's state dict (names, dtypes, shapes and bytes, in name order).

    Identifies the weights whatever file format they came from, so result files can tell two
    models evaluated under the same name apart.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(sae.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())  # reshape: 0-d buffers too
    return digest.hexdigest()
