"""Figures: valid PNGs, written atomically, showing exactly the data passed in."""
from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from scopebench.analyses.awcds.tokens import awcds_by_norm_percentile
from scopebench.results.plots import (plot_attention_emd_vs_shift, plot_awcds_by_norm, plot_cds_histograms,
                                      plot_feature_maps, plot_removal_deltas, plot_removal_scaling)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert image[..., :3].std() > 0  # something was drawn
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_cds_histogram_draws_counts_for_one_sae_and_fractions_for_several(tmp_path) -> None:
    rng = np.random.default_rng(0)
    cds = np.concatenate([rng.random(300) * 0.2, 0.5 + rng.random(40) * 0.4])
    counts, edges = np.histogram(cds, bins=25, range=(0.0, 1.0))
    drawn = plot_cds_histograms({"a": (edges, counts)}, {"a": 0.31}, tmp_path / "one.png")
    np.testing.assert_array_equal(drawn["a"]["heights"], counts)
    np.testing.assert_allclose(drawn["a"]["edges"], edges)
    assert drawn["a"]["gamma"] == 0.31
    assert_png(tmp_path / "one.png")
    drawn = plot_cds_histograms({"a": (edges, counts), "b": (edges[:3], [1, 3])}, {"a": 0.31, "b": None},
                                tmp_path / "two.png")
    np.testing.assert_allclose(drawn["a"]["heights"], counts / 340)
    np.testing.assert_allclose(drawn["b"]["heights"], [0.25, 0.75])
    assert np.isnan(drawn["b"]["gamma"])
    with pytest.raises(ValueError, match="len\\(edges\\) == len\\(counts\\) \\+ 1"):
        plot_cds_histograms({"a": (edges, counts[:-2])}, {}, tmp_path / "bad.png")


def test_awcds_plot_draws_one_line_per_table(tmp_path) -> None:
    rng = np.random.default_rng(1)
    norms = rng.random(400) * 100
    table = awcds_by_norm_percentile(norms, norms / 100 + rng.random(400) * 0.01, n_bins=10)
    other = table.assign(mean_awcds=table["mean_awcds"] / 2)
    path = tmp_path / "awcds.png"
    drawn = plot_awcds_by_norm({"a": table, "b": other}, path)
    np.testing.assert_allclose(drawn["a"]["x"], np.arange(10, 101, 10))
    np.testing.assert_allclose(drawn["a"]["y"], table["mean_awcds"].to_numpy()[:10])
    np.testing.assert_allclose(drawn["a"]["top_y"], table["mean_awcds"].to_numpy()[10:])
    np.testing.assert_allclose(drawn["b"]["y"], table["mean_awcds"].to_numpy()[:10] / 2)
    assert_png(path)
    with pytest.raises(ValueError, match="mean_awcds"):
        plot_awcds_by_norm({"a": pd.DataFrame({"bin": ["a"]})}, tmp_path / "bad.png")


def test_removal_deltas_draw_one_bar_per_sae_and_column(tmp_path) -> None:
    deltas = pd.DataFrame({"cls hi": [0.5, -1.0], "seg lo": [-20.0, np.nan]}, index=["batchtopk", "relu"])
    heights = plot_removal_deltas(deltas, tmp_path / "deltas.png")
    np.testing.assert_array_equal(heights, deltas.to_numpy())
    assert_png(tmp_path / "deltas.png")
    with pytest.raises(ValueError, match="no removal deltas"):
        plot_removal_deltas(pd.DataFrame(), tmp_path / "bad.png")


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
        plot_cds_histograms({"a": ([0.0, 0.5, 1.0], [1, 2])}, {}, tmp_path / "cds.pdf")
    assert list(tmp_path.iterdir()) == []
