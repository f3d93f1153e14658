"""Feature-group removal (DESIGN.md): ``x' = x - sum_{j in G} z_j(x) d_j``.

``z = sae.encode(x)`` and ``d_j`` is row ``j`` of ``sae.W_dec``.  Only the decoded
contribution of the group is subtracted: the SAE's error term ``x - decode(z)`` and the
decoder bias stay in ``x'``, so an empty group returns ``x`` unchanged (bitwise) and
removing every feature leaves ``x - (decode(z) - b_dec)``.

Removal is linear in the codes, so the mean over tokens of the removed tokens equals
``mean(x) - mean(z)[G] @ W_dec[G]``: pooled probes can be fed from per-image mean tokens
and mean codes (:func:`mean_tokens_and_codes`, :func:`remove_group_pooled`) without ever
storing per-token codes.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from scopebench.sae.base import SparseAutoencoder

FeatureGroup = Sequence[int] | torch.Tensor | np.ndarray
"""Feature indices (distinct ints in ``[0, d_sae)``) or a boolean mask of length ``d_sae``."""


def group_indices(group: FeatureGroup, d_sae: int) -> torch.Tensor:
    """The group as a sorted long tensor of distinct feature indices; validates the input."""
    indices = torch.as_tensor(np.asarray(group) if not isinstance(group, torch.Tensor) else group)
    if indices.dtype == torch.bool:
        if indices.shape != (d_sae,):
            raise ValueError(
                f"boolean feature mask has shape {tuple(indices.shape)}, expected ({d_sae},) = (d_sae,); "
                "pass one flag per SAE feature or a list of feature indices"
            )
        return torch.nonzero(indices, as_tuple=False).reshape(-1)
    if indices.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if indices.ndim != 1 or indices.dtype.is_floating_point or indices.dtype.is_complex:
        raise ValueError(
            f"feature group must be a 1-D list of integer indices or a boolean mask, got dtype "
            f"{indices.dtype} and shape {tuple(indices.shape)}"
        )
    indices = indices.long()
    if int(indices.min()) < 0 or int(indices.max()) >= d_sae:
        raise ValueError(
            f"feature indices must lie in [0, {d_sae}) (d_sae), got range "
            f"[{int(indices.min())}, {int(indices.max())}]"
        )
    unique = torch.unique(indices)
    if unique.numel() != indices.numel():
        raise ValueError(
            "feature group contains repeated indices, which would subtract a feature more than once; "
            "deduplicate it (e.g. sorted(set(group)))"
        )
    return unique


def _check_width(name: str, actual: int, expected: int, what: str) -> None:
    if actual != expected:
        raise ValueError(f"{name} has last dimension {actual}, expected {expected} ({what})")


@torch.no_grad()
def remove_group(
    x: torch.Tensor,
    sae: SparseAutoencoder,
    group: FeatureGroup,
    *,
    chunk_size: int = 4096,
    progress: bool = False,
) -> torch.Tensor:
    """Tokens ``x [..., d_in]`` with the decoded contribution of ``group`` subtracted.

    Encoding runs in chunks of ``chunk_size`` tokens in the dtype and on the device of
    ``sae.W_dec``; the result has ``x``'s dtype and device.  No gradients are tracked.
    """
    return remove_groups(x, sae, [group], chunk_size=chunk_size, progress=progress)[0]


@torch.no_grad()
def remove_groups(
    x: torch.Tensor,
    sae: SparseAutoencoder,
    groups: Sequence[FeatureGroup],
    *,
    chunk_size: int = 4096,
    progress: bool = False,
) -> list[torch.Tensor]:
    """:func:`remove_group` of each of ``groups``, encoding every chunk of tokens once for all of them.

    The encoder is the cost of a removal, so the high- and low-CDS removals of the same
    tokens share it; each result equals its own :func:`remove_group` bitwise.
    """
    _check_width("x", x.shape[-1], sae.d_in, "the SAE's d_in")
    decoder = sae.W_dec
    indices = [group_indices(group, sae.d_sae).to(decoder.device) for group in groups]
    flat = x.reshape(-1, x.shape[-1])
    outs = [flat.clone() if i.numel() == 0 else torch.empty_like(flat) for i in indices]
    edited = [(i, decoder[i], out) for i, out in zip(indices, outs) if i.numel()]
    starts = range(0, flat.shape[0], chunk_size) if edited else range(0)
    for start in tqdm(starts, desc="feature removal", disable=not progress):
        chunk = flat[start : start + chunk_size].to(device=decoder.device, dtype=decoder.dtype)
        codes = sae.encode(chunk)
        for group, atoms, out in edited:
            out[start : start + chunk_size] = (chunk - codes[:, group] @ atoms).to(out.dtype).to(out.device)
    return [out.reshape(x.shape) for out in outs]


@torch.no_grad()
def mean_tokens_and_codes(
    tokens: torch.Tensor, sae: SparseAutoencoder
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image means ``([B, d_in], [B, d_sae])`` of tokens ``[B, N, d_in]`` and their SAE codes.

    Both come back in the dtype and on the device of ``sae.W_dec``; call it per batch of images.
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must be [B, N, d_in], got shape {tuple(tokens.shape)}")
    _check_width("tokens", tokens.shape[-1], sae.d_in, "the SAE's d_in")
    decoder = sae.W_dec
    flat = tokens.reshape(-1, tokens.shape[-1]).to(device=decoder.device, dtype=decoder.dtype)
    codes = sae.encode(flat).reshape(tokens.shape[0], tokens.shape[1], sae.d_sae)
    return tokens.to(decoder.dtype).mean(dim=1).to(decoder.device), codes.mean(dim=1)


@torch.no_grad()
def remove_group_pooled(
    mean_x: torch.Tensor,
    mean_codes: torch.Tensor,
    W_dec: torch.Tensor,
    group: FeatureGroup,
) -> torch.Tensor:
    """Mean-pooled removal: equals ``remove_group(tokens, ...).mean(dim=1)`` by linearity.

    ``mean_x [B, d_in]`` and ``mean_codes [B, d_sae]`` are per-image means over the same
    tokens; ``W_dec [d_sae, d_in]`` is the SAE decoder.
    """
    if W_dec.ndim != 2:
        raise ValueError(f"W_dec must be [d_sae, d_in], got shape {tuple(W_dec.shape)}")
    d_sae, d_in = W_dec.shape
    _check_width("mean_x", mean_x.shape[-1], d_in, "W_dec's d_in")
    _check_width("mean_codes", mean_codes.shape[-1], d_sae, "W_dec's d_sae")
    if mean_x.shape[:-1] != mean_codes.shape[:-1]:
        raise ValueError(
            f"mean_x {tuple(mean_x.shape)} and mean_codes {tuple(mean_codes.shape)} must describe the "
            "same images (equal leading dimensions)"
        )
    indices = group_indices(group, d_sae)
    if indices.numel() == 0:
        return mean_x.clone()
    indices = indices.to(W_dec.device)
    codes = mean_codes.to(device=W_dec.device, dtype=W_dec.dtype)[..., indices]
    removed = mean_x.to(device=W_dec.device, dtype=W_dec.dtype) - codes @ W_dec[indices]
    return removed.to(device=mean_x.device, dtype=mean_x.dtype)
