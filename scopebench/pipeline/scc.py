"""Shifted Context Crop (SCC), DESIGN.md: two views whose patch grids overlap exactly.

For patch size ``n``, crop side ``p`` patches and shift ``s``: the image is centre-cropped
to a square and resized to ``(p+s)*n``; view A is the crop at pixel ``(0, 0)`` and view B
the crop at ``(s*n, s*n)``, each ``p*n`` square.  Patch ``(i, j)`` of B shows exactly the
pixels of patch ``(i+s, j+s)`` of A.  The overlap is a ``(p-s) x (p-s)`` grid in content
coordinates ``(u, v)``: A's patch ``(u+s, v+s)`` and B's patch ``(u, v)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class OverlapIndex:
    """Where the overlap's content cells sit in each view's row-major patch sequence."""

    side: int  # p - s: the overlap grid is side x side, row-major in content coordinates
    in_a: torch.Tensor  # [side*side] long: patch index in view A of content cell (u, v)
    in_b: torch.Tensor  # [side*side] long: patch index in view B of the same cell


@dataclass
class SCCPair:
    view_a: torch.Tensor  # [..., 3, p*n, p*n]
    view_b: torch.Tensor  # [..., 3, p*n, p*n]
    overlap: OverlapIndex
    shift: int


def overlap_index(grid_side: int, shift: int) -> OverlapIndex:
    """Index maps of the SCC overlap for a ``grid_side`` x ``grid_side`` patch grid."""
    if not 1 <= shift < grid_side:
        raise ValueError(f"SCC shift s={shift} must satisfy 1 <= s < p={grid_side} (the overlap would be empty)")
    side = grid_side - shift
    u, v = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    in_a = ((u + shift) * grid_side + (v + shift)).reshape(-1)
    in_b = (u * grid_side + v).reshape(-1)
    return OverlapIndex(side=side, in_a=in_a, in_b=in_b)


def _centre_square(maps: torch.Tensor) -> torch.Tensor:
    """The largest centred square of ``[..., H, W]``."""
    h, w = maps.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return maps[..., top : top + side, left : left + side]


def square_resize(images: torch.Tensor, size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Centre-crop ``[..., 3, H, W]`` images to a square, then resize to ``size`` (values clamped to [0, 1])."""
    square = _centre_square(images)
    if square.shape[-1] == size:
        return square.contiguous()
    lead = square.shape[:-3]
    flat = square.reshape(-1, *square.shape[-3:]).float()
    mode = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}[interpolation]
    kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
    out = F.interpolate(flat, size=(size, size), mode=mode, **kwargs).clamp_(0.0, 1.0)
    return out.reshape(*lead, *out.shape[-3:])


def square_resize_map(target: torch.Tensor, size: int) -> torch.Tensor:
    """Centre-crop a dense target ``[H, W]`` (labels or depth) to a square and resize it, nearest, to ``size``.

    The same crop as :func:`square_resize` gives the images, and each output pixel takes the
    source pixel under its centre (``nearest-exact``), as the images' centre-aligned resize
    does, so pixels stay aligned (plain ``nearest`` samples each cell's top-left corner: up to
    half an output pixel off).  Values are kept as they are (no clamping, no blending of
    labels or of invalid-depth zeros).
    """
    if target.ndim != 2:
        raise ValueError(f"a dense target must be [H, W], got shape {tuple(target.shape)}")
    square = _centre_square(target)
    if square.shape[-1] == size:
        return square.contiguous()
    out = F.interpolate(square[None, None].double(), size=(size, size), mode="nearest-exact")[0, 0]
    return out.to(target.dtype)


def scc(images: torch.Tensor, shift: int, *, patch_size: int, grid_side: int,
        interpolation: str = "bicubic") -> SCCPair:
    """Build the two SCC views of ``images`` (``[3, H, W]`` or ``[B, 3, H, W]``, float in [0, 1])."""
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"SCC expects [3, H, W] or [B, 3, H, W] images, got shape {tuple(images.shape)}")
    overlap = overlap_index(grid_side, shift)
    n, p = patch_size, grid_side
    canvas = square_resize(images, (p + shift) * n, interpolation)
    view_a = canvas[..., : p * n, : p * n]
    view_b = canvas[..., shift * n : (shift + p) * n, shift * n : (shift + p) * n]
    return SCCPair(view_a=view_a.contiguous(), view_b=view_b.contiguous(), overlap=overlap, shift=shift)


def overlap_geometry(overlap: OverlapIndex, n_patches: int) -> tuple[int, int]:
    """(grid_side p, shift s) implied by the overlap and the token count, checked for consistency."""
    p = math.isqrt(n_patches)
    if p * p != n_patches:
        raise ValueError(f"tokens have {n_patches} patches per image, not a square grid; pass patch tokens only "
                         "(prefix tokens removed)")
    s = p - overlap.side
    if s < 1 or int(overlap.in_a[0]) != s * (p + 1) or overlap.in_a.numel() != overlap.side**2:
        raise ValueError(f"overlap (side {overlap.side}) does not fit a {p}x{p} patch grid; build it with "
                         f"scopebench.pipeline.scc.overlap_index({p}, shift)")
    if overlap.side < 2:
        raise ValueError(f"overlap side p-s={overlap.side} < 2 gives D=0; use a smaller shift")
    return p, s
