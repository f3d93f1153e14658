"""Contextual Dependency Score (CDS) of SAE features under the Shifted Context Crop.

CDS_j = (1 / (n_j D)) * sum over the top-k images of feature j of
EMD(norm(M_jA), norm(M_jB)), where M_jA / M_jB are j's activation maps on the SCC
overlap in content coordinates (view A's patches ``overlap.in_a``, view B's
``overlap.in_b``), D = sqrt(2) (p - s - 1) is the largest distance on the overlap grid
and EMD is W1 in patch units.  Our reading of the paper's details:

- "the k images where j fires most strongly": ranked by the image's peak activation of j,
  the maximum over the overlap tokens of *both* views (so a feature firing in only one
  view is still found, and then skipped as below);
- images where either map is all zero are skipped, and n_j is the number of images
  actually used (<= k), so CDS stays in [0, 1]; n_j is recorded per feature;
- features that never fire on the overlap, or have no usable image, get NaN.

Two streaming passes keep memory at one batch of codes: pass 1 keeps a running top-k of
images per feature; pass 2 re-encodes only the selected images and sends their maps to
:func:`scopebench.emd.grid_w1` in large batches.

Under torchrun both passes split their batches of images over the ranks
(:func:`scopebench.distributed.share`), so every image is encoded in the same batch as in one
process: the ranks' top-k lists are merged, and the per-feature EMD sums (float64) and counts
are summed over ranks.  Every rank returns the whole result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from scopebench import distributed
from scopebench.sae.codes import TokenArray, encode_patches, load_rows, sae_device
from scopebench.emd import grid_w1
from scopebench.sae.base import SparseAutoencoder
from scopebench.pipeline.scc import OverlapIndex, overlap_geometry


@dataclass(frozen=True)
class CDSResult:
    cds: np.ndarray  # [d_sae] float64 in [0, 1]; NaN = dead or no usable image
    n_images_used: np.ndarray  # [d_sae] int64: images that entered the mean (<= k)
    top_images: np.ndarray  # [k, d_sae] int64 image indices, strongest first; -1 = fewer images fire
    top_values: np.ndarray  # [k, d_sae] float32 peak activation of those images (0 where -1)
    k: int
    shift: int
    side: int  # overlap grid side p - s
    D: float  # sqrt(2) (p - s - 1)

    @property
    def dead(self) -> np.ndarray:
        """Features that never fire on the overlap of any image."""
        return self.top_values[0] <= 0


def _check_inputs(sae: SparseAutoencoder, tokens_a: TokenArray, tokens_b: TokenArray, k: int,
                  batch_size: int) -> None:
    if len(tokens_a.shape) != 3:
        raise ValueError(f"tokens must be [n_img, N, d_in], got shape {tuple(tokens_a.shape)}")
    if tuple(tokens_a.shape) != tuple(tokens_b.shape):
        raise ValueError(f"view A and view B tokens differ in shape: {tuple(tokens_a.shape)} vs "
                         f"{tuple(tokens_b.shape)}; both must come from the same SCC run")
    if tokens_a.shape[2] != sae.d_in:
        raise ValueError(f"tokens have width {tokens_a.shape[2]} but the SAE expects d_in={sae.d_in}")
    if k < 1 or batch_size < 1:
        raise ValueError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}")


def top_images_per_feature(sae: SparseAutoencoder, tokens_a: TokenArray, tokens_b: TokenArray,
                           overlap: OverlapIndex, *, k: int, batch_size: int = 32,
                           device: str | torch.device | None = None,
                           progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1: for every feature, the k images with the largest peak activation on the overlap.

    Returns ``(top_images [k, d_sae] int64, top_values [k, d_sae] float32)``, strongest first;
    slots beyond the images where the feature fires hold index -1 and value 0.
    """
    _check_inputs(sae, tokens_a, tokens_b, k, batch_size)
    overlap_geometry(overlap, tokens_a.shape[1])
    dev = sae_device(sae, device)
    best_val = torch.full((k, sae.d_sae), -1.0, device=dev)  # below any code: filled on the first batch
    best_img = torch.full((k, sae.d_sae), -1, dtype=torch.long, device=dev)
    n_img = tokens_a.shape[0]
    for start in tqdm(distributed.share(range(0, n_img, batch_size)), desc="CDS pass 1: top-k images",
                      disable=not progress or not distributed.is_main()):
        rows = slice(start, min(start + batch_size, n_img))
        peak = torch.maximum(encode_patches(sae, load_rows(tokens_a, rows), overlap.in_a, dev).amax(1),
                             encode_patches(sae, load_rows(tokens_b, rows), overlap.in_b, dev).amax(1))
        images = torch.arange(rows.start, rows.stop, device=dev)[:, None].expand_as(peak)
        values, order = torch.cat([best_val, peak]).topk(k, dim=0)
        best_img = torch.cat([best_img, images]).gather(0, order)
        best_val = values
    if distributed.world_size() > 1:  # every rank saw its share of the batches: merge their top-k
        values = np.concatenate(distributed.gather(best_val.cpu().numpy(), "CDS top-k values"))
        images = np.concatenate(distributed.gather(best_img.cpu().numpy(), "CDS top-k images"))
        best_val, order = torch.from_numpy(values).to(dev).topk(k, dim=0)
        best_img = torch.from_numpy(images).to(dev).gather(0, order)
    fires = best_val > 0
    return (torch.where(fires, best_img, -1).cpu().numpy(),
            torch.where(fires, best_val, 0.0).cpu().numpy().astype(np.float32))


class _EMDTotals:
    """Per-feature sums of W1 over usable image pairs, solved in batches of ``emd_batch`` map pairs."""

    def __init__(self, d_sae: int, side: int, method: str, emd_batch: int, threads: int | None,
                 device: str | torch.device | None) -> None:
        self.side, self.method, self.emd_batch, self.threads, self.device = side, method, emd_batch, threads, device
        self.emd_sum = np.zeros(d_sae)
        self.n_used = np.zeros(d_sae, dtype=np.int64)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (features, maps A, maps B)
        self._n_pending = 0

    def add(self, features: np.ndarray, maps_a: np.ndarray, maps_b: np.ndarray) -> None:
        self._pending.append((features, maps_a, maps_b))
        self._n_pending += features.size
        if self._n_pending >= self.emd_batch:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        feats, maps_a, maps_b = (np.concatenate(parts) for parts in zip(*self._pending))
        self._pending, self._n_pending = [], 0
        usable = (maps_a.sum(1) > 0) & (maps_b.sum(1) > 0)  # an all-zero map in either view: image skipped
        if not usable.any():
            return
        w1 = grid_w1(maps_a[usable], maps_b[usable], self.side, method=self.method, normalise=True,
                     threads=self.threads, device=self.device)
        if not np.isfinite(w1).all():
            raise RuntimeError(f"EMD solver '{self.method}' returned non-finite distances for non-empty maps")
        np.add.at(self.emd_sum, feats[usable], w1)
        np.add.at(self.n_used, feats[usable], 1)


def compute_cds(sae: SparseAutoencoder, tokens_a: TokenArray, tokens_b: TokenArray, overlap: OverlapIndex, *,
                k: int, batch_size: int = 32, device: str | torch.device | None = None, emd_method: str = "exact",
                emd_batch: int = 8192, threads: int | None = None, progress: bool = True) -> CDSResult:
    """CDS of every SAE feature from cached SCC tokens ``tokens_a`` / ``tokens_b`` ``[n_img, N, d_in]``.

    The token arrays may be numpy memmaps (or cache arrays); only ``batch_size`` images are
    read at once, and their codes take ``2 * batch_size * side**2 * d_sae * 4`` bytes, so
    lower ``batch_size`` for large dictionaries.  Map pairs go to
    :func:`scopebench.emd.grid_w1` (``emd_method`` "exact" or "sinkhorn") ``emd_batch`` at a time.
    """
    _check_inputs(sae, tokens_a, tokens_b, k, batch_size)
    _, shift = overlap_geometry(overlap, tokens_a.shape[1])
    side = overlap.side
    top_images, top_values = top_images_per_feature(sae, tokens_a, tokens_b, overlap, k=k,
                                                     batch_size=batch_size, device=device, progress=progress)
    totals = _EMDTotals(sae.d_sae, side, emd_method, emd_batch, threads, device)
    _, pair_feature = np.nonzero(top_images >= 0)  # one (image, feature) pair per filled top-k slot
    pair_image = top_images[top_images >= 0]
    order = np.argsort(pair_image, kind="stable")
    pair_image, pair_feature = pair_image[order], pair_feature[order]
    needed = np.unique(pair_image)
    dev = sae_device(sae, device)
    for start in tqdm(distributed.share(range(0, needed.size, batch_size)), desc="CDS pass 2: EMD",
                      disable=not progress or not distributed.is_main()):
        images = needed[start : start + batch_size]
        codes_a = encode_patches(sae, load_rows(tokens_a, images), overlap.in_a, dev)
        codes_b = encode_patches(sae, load_rows(tokens_b, images), overlap.in_b, dev)
        lo = np.searchsorted(pair_image, images[0], side="left")
        hi = np.searchsorted(pair_image, images[-1], side="right")
        local = torch.as_tensor(np.searchsorted(images, pair_image[lo:hi]), device=dev)
        feats = pair_feature[lo:hi]
        feat_t = torch.as_tensor(feats, device=dev)
        totals.add(feats, codes_a[local, :, feat_t].double().cpu().numpy(),
                   codes_b[local, :, feat_t].double().cpu().numpy())
    totals.flush()
    emd_sum = distributed.sum_over_ranks(totals.emd_sum, "CDS EMD sums")
    n_used = distributed.sum_over_ranks(totals.n_used, "CDS image counts")
    D = math.sqrt(2.0) * (side - 1)
    cds = np.where(n_used > 0, emd_sum / (np.maximum(n_used, 1) * D), np.nan)
    return CDSResult(cds=cds, n_images_used=n_used, top_images=top_images, top_values=top_values, k=k,
                     shift=shift, side=side, D=D)


def feature_maps(sae: SparseAutoencoder, tokens: TokenArray, features: np.ndarray, images: np.ndarray, *,
                 patch_index: torch.Tensor | None = None, device: str | torch.device | None = None) -> np.ndarray:
    """Activation maps ``[n_features, n_images, side, side]`` of ``features[f]`` on images ``images[f, i]``.

    ``images`` is ``[n_features, n_images]`` image indices (e.g. ``CDSResult.top_images[:, f].T``);
    -1 gives an all-zero map.  ``patch_index`` selects a square set of patches (e.g.
    ``overlap.in_a``, in content order); None means the full patch grid.
    """
    features = np.asarray(features, dtype=np.int64)
    images = np.asarray(images, dtype=np.int64)
    if images.ndim != 2 or images.shape[0] != features.size:
        raise ValueError(f"images must be [n_features, n_images] = [{features.size}, ...], got {images.shape}")
    n_patch = tokens.shape[1] if patch_index is None else patch_index.numel()
    side = math.isqrt(n_patch)
    if side * side != n_patch:
        raise ValueError(f"{n_patch} patches do not form a square map; pass patch tokens / a square patch_index")
    out = np.zeros((*images.shape, side, side))
    valid = images >= 0
    if valid.any():
        needed = np.unique(images[valid])
        codes = encode_patches(sae, load_rows(tokens, needed), patch_index, sae_device(sae, device))
        rows = torch.as_tensor(np.searchsorted(needed, images[valid]))
        cols = torch.as_tensor(np.broadcast_to(features[:, None], images.shape)[valid])
        picked = codes[rows.to(codes.device), :, cols.to(codes.device)]  # [n_valid, side*side]
        out[valid] = picked.double().cpu().numpy().reshape(-1, side, side)
    return out
