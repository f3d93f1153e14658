"""SAE codes of cached token batches: the one place analyses turn tokens into codes."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from scopebench.sae.base import SparseAutoencoder

TokenArray = Any
"""``[n_img, N, d]`` tokens with ``.shape`` and row indexing: numpy (memmap), torch, or a cache array."""


def load_rows(tokens: TokenArray, rows: slice | Sequence[int] | np.ndarray) -> torch.Tensor:
    """Rows of a (memmapped) ``[n_img, N, d]`` array as a float32 CPU tensor (only those rows are read)."""
    if isinstance(tokens, torch.Tensor):
        index = rows if isinstance(rows, slice) else torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return tokens[index].detach().to("cpu", torch.float32)
    index = rows if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
    return torch.from_numpy(np.array(tokens[index], dtype=np.float32))  # a private, writable copy


def sae_device(sae: SparseAutoencoder, device: str | torch.device | None) -> torch.device:
    """``device`` if given, else where the SAE's decoder lives."""
    return torch.device(device) if device is not None else sae.W_dec.device


@torch.no_grad()
def encode_patches(sae: SparseAutoencoder, batch: torch.Tensor, patch_index: torch.Tensor | None,
                   device: torch.device) -> torch.Tensor:
    """Codes ``[B, G, d_sae]`` of the patches ``patch_index`` (all if None) of a ``[B, N, d_in]`` batch."""
    if batch.shape[-1] != sae.d_in:
        raise ValueError(f"tokens have width {batch.shape[-1]} but the SAE expects d_in={sae.d_in}; "
                         "the cache and the SAE must come from the same backbone layer")
    if patch_index is not None:
        batch = batch[:, patch_index.to(batch.device)]
    b, g, d = batch.shape
    codes = sae.encode(batch.reshape(b * g, d).to(device)).float()
    if codes.shape != (b * g, sae.d_sae):
        raise ValueError(f"sae.encode returned shape {tuple(codes.shape)}, expected {(b * g, sae.d_sae)}")
    return codes.reshape(b, g, sae.d_sae)
