"""Outlier tokens: patch tokens whose L2 norm exceeds a threshold tau (DESIGN.md).

``tau`` is either fixed per backbone (paper Table 5) or ``"auto"``: the valley of the
log-norm histogram between the bulk of tokens and the high-norm outlier mode, accepted
only when a scan test finds it significant and the mode above it is a minority
(:func:`auto_tau`, :func:`scopebench.analyses.valley.valley_test`).
"""
from __future__ import annotations

from typing import Literal, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from scopebench.sae.codes import TokenArray
from scopebench.analyses.valley import UnimodalError, histogram_valley

Tau = Union[float, Literal["auto"]]
MAX_OUTLIER_FRACTION = 0.5  # outliers are a minority of tokens (a few % in the paper's backbones)


def token_norms(tokens: TokenArray, *, batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """L2 norms of ``[n_img, N, d]`` (or ``[n, d]``) tokens over the last axis, streamed over the first.

    Works on numpy memmaps without loading them whole; returns float64 of shape ``tokens.shape[:-1]``.
    """
    if len(tokens.shape) < 2:
        raise ValueError(f"tokens must have shape [..., d] with at least 2 axes, got {tuple(tokens.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = np.empty(tuple(tokens.shape[:-1]), dtype=np.float64)
    for start in tqdm(range(0, tokens.shape[0], batch_size), desc="token norms", disable=not progress):
        chunk = tokens[start : start + batch_size]
        chunk = chunk.detach().cpu().numpy() if isinstance(chunk, torch.Tensor) else np.asarray(chunk)
        out[start : start + batch_size] = np.linalg.norm(chunk.astype(np.float64), axis=-1)
    return out


def outlier_mask(norms: np.ndarray, tau: float) -> np.ndarray:
    """Boolean mask of outlier tokens: ``norm > tau`` (strict)."""
    if not np.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau must be a positive finite norm threshold, got {tau}")
    return np.asarray(norms) > tau


def auto_tau(norms: np.ndarray, *, bins: int = 100, smooth_bins: float = 2.0,
             max_outlier_fraction: float = MAX_OUTLIER_FRACTION) -> float:
    """Outlier threshold at the valley of the log-norm histogram between the bulk and an outlier mode.

    The valley must pass :func:`scopebench.analyses.valley.valley_test` on the log norms (a scan of
    histogram windows with exact binomial tests, Bonferroni-adjusted p <= 1e-3, valid for
    any unimodal distribution and sample size) with less than ``max_outlier_fraction`` of
    the tokens above it, and the returned tau must flag fewer than that share: outliers are
    a minority mode.  Otherwise raises :class:`scopebench.analyses.valley.UnimodalError` (e.g. a
    backbone without high-norm tokens, or a skewed unimodal bulk): pass a fixed tau instead.
    """
    n = np.asarray(norms, dtype=np.float64).ravel()
    n = n[np.isfinite(n)]
    if n.size == 0 or (n <= 0).all():
        raise ValueError("auto_tau needs positive token norms; got none (is the token array empty?)")
    tau = float(np.exp(histogram_valley(np.log(n[n > 0]), bins=bins, smooth_bins=smooth_bins,
                                        max_upper_fraction=max_outlier_fraction, what="log token norms")))
    share = float((n > tau).mean())
    if share >= max_outlier_fraction:
        raise UnimodalError(f"the log-norm valley at tau={tau:.4g} would flag {share:.1%} of tokens as outliers; "
                            f"outliers are a minority mode (< {max_outlier_fraction:.0%}), so this is no outlier "
                            "valley; set tau explicitly")
    return tau


def resolve_tau(spec_tau: Tau, norms: np.ndarray | None = None) -> float:
    """The threshold to use: ``spec_tau`` if numeric, else :func:`auto_tau` of ``norms``."""
    if spec_tau == "auto":
        if norms is None:
            raise ValueError("tau='auto' needs the token norms to find the log-norm valley; pass norms=")
        return auto_tau(norms)
    if isinstance(spec_tau, str):
        raise ValueError(f"tau must be a positive number or 'auto', got {spec_tau!r}")
    tau = float(spec_tau)
    if not np.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau must be a positive finite number or 'auto', got {spec_tau!r}")
    return tau
