"""Activation-weighted CDS (awCDS) of tokens, and its mean across the token-norm spectrum (Figure 7).

awCDS(t) = sum_j a_tj CDS_j / sum_j a_tj over the features active on token t; features
with NaN CDS (dead / unscored) are left out of both sums, and a token with no scored
active feature gets NaN (counted, not averaged).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from scopebench.sae.codes import TokenArray, encode_patches, load_rows, sae_device
from scopebench.sae.base import SparseAutoencoder


@dataclass(frozen=True)
class TokenAwCDS:
    awcds: np.ndarray  # [n_img, N] float64, NaN where no scored feature is active
    norms: np.ndarray  # [n_img, N] float64 L2 norms of the same tokens


@torch.no_grad()
def token_awcds(sae: SparseAutoencoder, tokens: TokenArray, cds: np.ndarray, *, batch_size: int = 32,
                device: str | torch.device | None = None, progress: bool = True) -> TokenAwCDS:
    """awCDS and norm of every token of ``tokens`` ``[n_img, N, d_in]`` (numpy memmap friendly)."""
    cds = np.asarray(cds, dtype=np.float64)
    if len(tokens.shape) != 3:
        raise ValueError(f"tokens must be [n_img, N, d_in], got shape {tuple(tokens.shape)}")
    if cds.shape != (sae.d_sae,):
        raise ValueError(f"cds has shape {cds.shape} but the SAE has d_sae={sae.d_sae} features; "
                         "use the CDS computed for this SAE")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = sae_device(sae, device)
    scored = torch.as_tensor(np.isfinite(cds), device=dev)
    weights = torch.as_tensor(np.nan_to_num(cds, nan=0.0), device=dev)
    n_img, n_tok = tokens.shape[0], tokens.shape[1]
    awcds = np.empty((n_img, n_tok))
    norms = np.empty((n_img, n_tok))
    for start in tqdm(range(0, n_img, batch_size), desc="awCDS", disable=not progress):
        rows = slice(start, min(start + batch_size, n_img))
        batch = load_rows(tokens, rows)
        codes = encode_patches(sae, batch, None, dev).double() * scored
        mass = codes.sum(-1)
        value = (codes @ weights) / mass
        awcds[rows] = torch.where(mass > 0, value, torch.nan).cpu().numpy()
        norms[rows] = batch.double().norm(dim=-1).numpy()
    return TokenAwCDS(awcds=awcds, norms=norms)


def awcds_by_norm_percentile(norms: np.ndarray, awcds: np.ndarray, *, n_bins: int = 20,
                             top_fraction: float = 0.01) -> pd.DataFrame:
    """Mean awCDS per token-norm percentile bin, plus a last row for the top ``top_fraction`` tokens.

    Bins are equal-count by norm rank (ties broken by position), so each of the ``n_bins``
    rows holds ~1/n_bins of the tokens.  Columns: ``bin`` (label, e.g. "95-100%" or
    "top 1%"), ``is_top`` (True only on the last, top-fraction row), ``pct_lo``, ``pct_hi``,
    ``norm_lo``, ``norm_hi``, ``n_tokens``, ``n_scored`` (tokens with finite awCDS),
    ``mean_awcds`` (over scored tokens; NaN if none).
    """
    norms = np.asarray(norms, dtype=np.float64).ravel()
    awcds = np.asarray(awcds, dtype=np.float64).ravel()
    if norms.shape != awcds.shape or norms.size == 0:
        raise ValueError(f"norms and awcds must be non-empty and of equal size, got {norms.size} and {awcds.size}")
    if n_bins < 1 or not 0.0 < top_fraction < 1.0:
        raise ValueError(f"need n_bins >= 1 and 0 < top_fraction < 1, got {n_bins}, {top_fraction}")
    order = np.argsort(norms, kind="stable")
    n = norms.size
    rows = []

    def add(label: str, pct_lo: float, pct_hi: float, members: np.ndarray, is_top: bool) -> None:
        values = awcds[members]
        finite = values[np.isfinite(values)]
        rows.append({"bin": label, "is_top": is_top, "pct_lo": pct_lo, "pct_hi": pct_hi,
                     "norm_lo": float(norms[members].min()) if members.size else math.nan,
                     "norm_hi": float(norms[members].max()) if members.size else math.nan,
                     "n_tokens": int(members.size), "n_scored": int(finite.size),
                     "mean_awcds": float(finite.mean()) if finite.size else math.nan})

    for i in range(n_bins):
        lo, hi = (i * n) // n_bins, ((i + 1) * n) // n_bins
        add(f"{100 * i / n_bins:g}-{100 * (i + 1) / n_bins:g}%", 100 * i / n_bins, 100 * (i + 1) / n_bins,
            order[lo:hi], False)
    n_top = max(1, math.ceil(top_fraction * n))
    add(f"top {100 * top_fraction:g}%", 100 * (1 - top_fraction), 100.0, order[n - n_top :], True)
    return pd.DataFrame(rows)
