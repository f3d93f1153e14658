"""Where tensors run: one rule for extraction, analyses and probes."""
from __future__ import annotations

import contextlib

import torch

from scopebench.precision import check_precision


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` or ``None`` -> CUDA when available, else CPU; other names are checked, not guessed.

    ``cuda`` is the current CUDA device: under torchrun, :func:`scopebench.distributed.init_from_env`
    makes it the rank's GPU (``LOCAL_RANK``).
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    return resolved


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward pass at ``precision`` runs under: nothing for fp32, else autocast on ``device``."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])
