"""Bilinear upsampling of a dense probe's patch-grid logits to its target maps (segmentation and depth)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``logits [B, C, rows, cols]`` resized bilinearly (``align_corners=False``) to ``size = (H, W)``.

    Logits already at ``size`` come back as they are: at scale 1 every output cell samples its own input cell
    with weights 1 and 0, so the resize would change no value, and it was about a quarter of a depth-probe
    step at the planted scale, whose targets are at the patch grid.
    """
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
