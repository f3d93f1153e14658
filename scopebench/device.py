"""Where tensors run: one rule for extraction, analyses and probes."""
from __future__ import annotations

import torch


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
