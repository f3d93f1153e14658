from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

from scopebench.analyses.base import Inputs
from scopebench.analyses.cds.scores import feature_maps
from scopebench.analyses.feature_maps.config import FeatureMapsConfig
from scopebench.analyses.feature_maps.output import FeatureMapPanel, FeatureMapsOutput
from scopebench.pipeline.extract import scc_views
from scopebench.pipeline.scc import square_resize


def view_disagreement(maps_a: np.ndarray, maps_b: np.ndarray) -> float:
    """Mean total variation between the mass-normalised maps ``[..., side, side]`` of the two views.

    Both maps are in content coordinates, so a feature that fires on the same content in both
    views scores 0 and one whose map moves with the crop scores up to 1.
    """
    na = maps_a / np.maximum(maps_a.sum((-1, -2), keepdims=True), 1e-12)
    nb = maps_b / np.maximum(maps_b.sum((-1, -2), keepdims=True), 1e-12)
    return float(0.5 * np.abs(na - nb).sum((-1, -2)).mean())


def _png(pixels: torch.Tensor) -> str:
    """``[3, H, W]`` in [0, 1] -> base64 PNG."""
    array = (pixels.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _overlap_thumbnails(bench: Inputs, backbone: str, shift: int, dataset_indices: np.ndarray,
                        size: int) -> dict[int, str]:
    """The content the overlap maps cover: view A's pixels from patch (s, s) on, per dataset index."""
    spec = bench.backbone(backbone).spec
    data = bench.dataset(backbone, "scc")
    views = scc_views(bench.backbone(backbone), shift)
    start = shift * spec.patch_size
    out = {}
    for index in np.unique(dataset_indices):
        view_a = views(data[int(index)].image)["_a"][:, start:, start:]
        out[int(index)] = _png(square_resize(view_a, size, "bilinear"))
    return out


def compute(bench: Inputs, backbone: str, sae: str, config: FeatureMapsConfig) -> FeatureMapsOutput:
    scores, _ = bench.run("cds", backbone, sae).details
    pair = bench.scc_tokens(backbone, scores.shift)
    model = bench.sae(backbone, sae)
    scored = np.flatnonzero(np.isfinite(scores.cds) & (scores.n_images_used >= config.n_images))
    if scored.size < 2 * config.n_features:
        raise RuntimeError(f"only {scored.size} features of {sae} on {backbone} fire on {config.n_images}+ SCC "
                           f"images; Figures 9-10 need {2 * config.n_features} (lower feature_maps.n_features or "
                           "raise cds.images)")
    order = scored[np.argsort(scores.cds[scored], kind="stable")]
    groups = {"low": order[:config.n_features], "high": order[-config.n_features:]}
    tv, panels = {}, []
    for group, features in groups.items():
        rows = scores.top_images[:config.n_images, features].T  # [feature, image] SCC rows
        assert (rows >= 0).all(), "features firing on n_images images have that many top images"
        maps_a = feature_maps(model, pair.tokens_a, features, rows, patch_index=pair.overlap.in_a, device=bench.device)
        maps_b = feature_maps(model, pair.tokens_b, features, rows, patch_index=pair.overlap.in_b, device=bench.device)
        tv[group] = view_disagreement(maps_a, maps_b)
        indices = pair.image_index[rows]
        pixels = _overlap_thumbnails(bench, backbone, scores.shift, indices, config.thumbnail)
        for f, feature in enumerate(features):
            panels.append(FeatureMapPanel(
                group=group, feature=int(feature), cds=float(scores.cds[feature]),
                images=[int(i) for i in indices[f]],
                maps=[[[float(f"{v:.4g}") for v in row] for row in image] for image in maps_a[f]],
                thumbnails=[pixels[int(i)] for i in indices[f]]))
    return FeatureMapsOutput(view_tv_low=tv["low"], view_tv_high=tv["high"], panels=panels)
