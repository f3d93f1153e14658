"""Figures: valid PNGs, written atomically, showing exactly the data passed in."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from scopebench.analyses.awcds.tokens import awcds_by_norm_percentile
from scopebench.results.plots import (plot_attention_emd_vs_shift, plot_awcds_by_norm, plot_cds_histogram, plot_feature_maps,
                              plot_removal_scaling)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert image[..., :3].std() > 0  # something was drawn
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_cds_histogram_draws_the_finite_values_and_gamma(tmp_path) -> None:
    rng = np.random.default_rng(0)
    cds = np.concatenate([rng.random(300) * 0.2, 0.5 + rng.random(40) * 0.4, [np.nan, np.nan]])
    path = tmp_path / "cds.png"
    drawn = plot_cds_histogram(cds, 0.31, path, bins=25)
    counts, edges = np.histogram(cds[np.isfinite(cds)], bins=25, range=(0.0, 1.0))
    np.testing.assert_array_equal(drawn["counts"], counts)
    np.testing.assert_allclose(drawn["edges"], edges)
    assert drawn["gamma"] == 0.31 and drawn["counts"].sum() == 340
    assert_png(path)


def test_awcds_plot_draws_the_table(tmp_path) -> None:
    rng = np.random.default_rng(1)
    norms = rng.random(400) * 100
    table = awcds_by_norm_percentile(norms, norms / 100 + rng.random(400) * 0.01, n_bins=10)
    path = tmp_path / "awcds.png"
    drawn = plot_awcds_by_norm(table, path)
    np.testing.assert_allclose(drawn["x"], np.arange(10, 101, 10))
    np.testing.assert_allclose(drawn["y"], table["mean_awcds"].to_numpy()[:10])
    np.testing.assert_allclose(drawn["top_y"], table["mean_awcds"].to_numpy()[10:])
    assert_png(path)
    with pytest.raises(ValueError, match="mean_awcds"):
        plot_awcds_by_norm(pd.DataFrame({"bin": ["a"]}), tmp_path / "bad.png")


def test_attention_emd_vs_shift_draws_both_series(tmp_path) -> None:
    non = [1.490, 1.745, 1.842, 1.855, 1.915, 1.958]  # paper Table 9
    out = [5.179, 6.752, 6.869, 6.876, 5.811, 5.533]
    path = tmp_path / "shift.png"
    drawn = plot_attention_emd_vs_shift(range(1, 7), non, out, path)
    np.testing.assert_allclose(drawn["shifts"], np.arange(1, 7))
    np.testing.assert_allclose(drawn["non_outlier"], non)
    np.testing.assert_allclose(drawn["outlier"], out)
    assert_png(path)
    with pytest.raises(ValueError, match="equal length"):
        plot_attention_emd_vs_shift([1, 2], [1.0], [2.0, 3.0], tmp_path / "x.png")


def test_feature_map_grid_draws_each_map(tmp_path) -> None:
    rng = np.random.default_rng(2)
    maps = rng.random((2, 3, 5, 5))
    maps[1, 2] = 0.0
    images = rng.random((2, 3, 20, 20, 3))
    path = tmp_path / "maps.png"
    drawn = plot_feature_maps(maps, path, feature_ids=[12622, 15881], cds=[0.006, 0.882], images=images)
    np.testing.assert_allclose(drawn, maps)
    assert_png(path)
    with pytest.raises(ValueError, match="one entry per map row"):
        plot_feature_maps(maps, tmp_path / "bad.png", feature_ids=[1])


def test_removal_scaling_draws_each_embedding_per_size(tmp_path) -> None:
    accuracy = {"original": [70.0, 75.5, 80.0], "high_removed": [71.0, 76.0, 80.5], "low_removed": [60.0, 70.0, 78.0]}
    drawn = plot_removal_scaling(["b", "l", "g"], accuracy, tmp_path / "figure8.png")
    for name, values in accuracy.items():
        np.testing.assert_array_equal(drawn[name], values)
    assert mpimg.imread(tmp_path / "figure8.png").ndim == 3
    with pytest.raises(ValueError, match="one accuracy per size"):
        plot_removal_scaling(["b", "l"], {"original": [1.0]}, tmp_path / "bad.png")


def test_non_png_path_is_refused_and_nothing_is_written(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"\.png"):
        plot_cds_histogram(np.array([0.1, 0.2]), 0.15, tmp_path / "cds.pdf")
    assert list(tmp_path.iterdir()) == []
