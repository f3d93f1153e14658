"""Figures 9 and 10: where the lowest- and highest-CDS features fire on their top images."""
import numpy as np
import pytest

from scopebench.analyses.cds.scores import feature_maps
from scopebench.results.plots import plot_feature_maps

N_FEATURES, N_IMAGES = 6, 4


def _view_disagreement(maps_a: np.ndarray, maps_b: np.ndarray) -> float:
    """Mean total variation between the normalised maps of the two views (content coordinates)."""
    na = maps_a / np.maximum(maps_a.sum((-1, -2), keepdims=True), 1e-12)
    nb = maps_b / np.maximum(maps_b.sum((-1, -2), keepdims=True), 1e-12)
    return float(0.5 * np.abs(na - nb).sum((-1, -2)).mean())


@pytest.mark.backbones("table4")
def test_figure9_10_feature_maps(workbench, backbone, sae_name, plots_dir):
    cds, _ = workbench.run("cds", backbone, sae_name).details
    pair = workbench.scc_tokens(backbone, cds.shift)
    sae = workbench.sae(backbone, sae_name)
    scored = np.flatnonzero(np.isfinite(cds.cds) & (cds.n_images_used >= N_IMAGES))
    if scored.size < 2 * N_FEATURES:
        pytest.fail(f"only {scored.size} features of {sae_name} on {backbone} fire on {N_IMAGES}+ images")
    order = scored[np.argsort(cds.cds[scored], kind="stable")]
    disagreement = {}
    for name, features in {"figure9-low-cds": order[:N_FEATURES], "figure10-high-cds": order[-N_FEATURES:]}.items():
        images = cds.top_images[:N_IMAGES, features].T
        maps_a = feature_maps(sae, pair.tokens_a, features, images, patch_index=pair.overlap.in_a)
        maps_b = feature_maps(sae, pair.tokens_b, features, images, patch_index=pair.overlap.in_b)
        drawn = plot_feature_maps(np.concatenate([maps_a, maps_b], axis=1),
                                  plots_dir / f"{name}-{backbone}-{sae_name}.png",
                                  feature_ids=features.tolist(), cds=cds.cds[features].tolist(),
                                  title=f"{name}: view A (left {N_IMAGES}), view B (right {N_IMAGES})")
        assert drawn.shape == (N_FEATURES, 2 * N_IMAGES, pair.overlap.side, pair.overlap.side)
        assert (maps_a.reshape(N_FEATURES, -1).max(1) > 0).all(), "top images must show the feature firing"
        disagreement[name] = _view_disagreement(maps_a, maps_b)
    # low-CDS maps follow content, so the two views agree far better than for high-CDS features
    assert disagreement["figure9-low-cds"] < disagreement["figure10-high-cds"], disagreement
