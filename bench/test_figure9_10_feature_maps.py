"""Figures 9 and 10: where the lowest- and highest-CDS features fire on their top images."""
import numpy as np
import pytest

from scopebench.results.plots import plot_feature_maps


@pytest.mark.backbones("figure9-10")
def test_figure9_10_feature_maps(workbench, backbone, sae_name, claim_report, plots_dir):
    result = workbench.result("feature_maps", backbone, sae_name)
    config = workbench.config("feature_maps", backbone)
    for group in ("low", "high"):
        panels = [p for p in result.output.panels if p.group == group]
        assert len(panels) == config.n_features, group
        maps = np.array([p.maps for p in panels])
        # (a top image may show nothing in view A: it is chosen by the peak over both views)
        assert maps.shape[:2] == (config.n_features, config.n_images) and np.isfinite(maps).all()
        images = np.array([p.thumbnail_pixels() for p in panels])
        drawn = plot_feature_maps(maps, plots_dir / f"figure{9 if group == 'low' else 10}-{group}-cds-{backbone}-"
                                  f"{sae_name}.png", feature_ids=[p.feature for p in panels],
                                  cds=[p.cds for p in panels], images=images,
                                  title=f"{group}-CDS features, {backbone} / {sae_name} (view A)")
        assert drawn.shape == maps.shape
    low, high = ([p.cds for p in result.output.panels if p.group == g] for g in ("low", "high"))
    assert max(low) <= min(high), "the low group holds the lowest CDS"
    claim_report.assert_held(*claim_report.record(result))
