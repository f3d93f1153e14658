"""Figures of the scope analyses, saved atomically as PNG (matplotlib, Agg backend).

Each function saves one figure and returns the data it actually drew, read back from
the figure's artists, so callers and tests can check the picture against the numbers.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from scopebench.atomic import atomic_write  # noqa: E402


def save_png(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically (:func:`scopebench.atomic.atomic_write`), then close it."""
    try:
        final = Path(path)
        if final.suffix.lower() != ".png":
            raise ValueError(f"plots are written as PNG; give a path ending in .png, got {final}")
        atomic_write(final, lambda handle: fig.savefig(handle, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return final


def plot_cds_histogram(cds: np.ndarray, gamma: float, path: str | os.PathLike[str], *, bins: int = 50,
                       title: str = "CDS distribution") -> dict[str, np.ndarray | float]:
    """Histogram of the finite CDS values over [0, 1] with a vertical line at gamma (Figure 6).

    Returns ``{"counts", "edges", "gamma"}`` as drawn.
    """
    values = np.asarray(cds, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite CDS values to plot (are all features dead?)")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    _, edges, bars = ax.hist(values, bins=bins, range=(0.0, 1.0), color="0.55")
    line = ax.axvline(gamma, color="crimson", linestyle="--", label=f"gamma = {gamma:.3f}")
    ax.set(xlabel="CDS", ylabel="features", title=title)
    ax.legend()
    drawn = {"counts": np.array([bar.get_height() for bar in bars]), "edges": np.asarray(edges),
             "gamma": float(line.get_xdata()[0])}
    save_png(fig, path)
    return drawn


def plot_awcds_by_norm(table: pd.DataFrame, path: str | os.PathLike[str], *,
                       title: str = "awCDS across the token-norm spectrum") -> dict[str, np.ndarray]:
    """Mean awCDS per norm-percentile bin (Figure 7), from :func:`awcds_by_norm_percentile`'s table.

    The equal-width percentile bins are drawn as a line over their upper percentile; a
    "top" row (top fraction of tokens) is marked separately.  Returns ``{"x", "y"}`` of
    the line and ``{"top_x", "top_y"}`` of the marker (empty when there is no top row).
    """
    missing = {"bin", "is_top", "pct_hi", "mean_awcds"} - set(table.columns)
    if missing:
        raise ValueError(f"table lacks columns {sorted(missing)}; pass the output of awcds_by_norm_percentile")
    is_top = table["is_top"].astype(bool)
    bins, top = table[~is_top], table[is_top]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    (line,) = ax.plot(bins["pct_hi"].to_numpy(), bins["mean_awcds"].to_numpy(), marker="o", label="percentile bin")
    (marker,) = ax.plot(top["pct_hi"].to_numpy(), top["mean_awcds"].to_numpy(), "r*", markersize=12,
                        label=str(top["bin"].iloc[0]) if len(top) else "top")
    ax.set(xlabel="token-norm percentile", ylabel="mean awCDS", title=title)
    ax.legend()
    drawn = {"x": np.asarray(line.get_xdata(), dtype=float), "y": np.asarray(line.get_ydata(), dtype=float),
             "top_x": np.asarray(marker.get_xdata(), dtype=float),
             "top_y": np.asarray(marker.get_ydata(), dtype=float)}
    save_png(fig, path)
    return drawn


def plot_attention_emd_vs_shift(shifts: Sequence[int], non_outlier: Sequence[float], outlier: Sequence[float],
                                path: str | os.PathLike[str], *,
                                title: str = "Attention EMD under SCC") -> dict[str, np.ndarray]:
    """Mean attention EMD against the SCC shift s for outlier and non-outlier queries (Table 9).

    Returns ``{"shifts", "non_outlier", "outlier"}`` as drawn.
    """
    if not len(shifts) == len(non_outlier) == len(outlier) or not len(shifts):
        raise ValueError(f"shifts, non_outlier and outlier must be non-empty and of equal length, got "
                         f"{len(shifts)}, {len(non_outlier)}, {len(outlier)}")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    (line_non,) = ax.plot(shifts, non_outlier, marker="o", label="non-outlier")
    (line_out,) = ax.plot(shifts, outlier, marker="s", color="crimson", label="outlier")
    ax.set(xlabel="shift s (patches)", ylabel="mean EMD (patch units)", title=title)
    ax.set_xticks(list(shifts))
    ax.legend()
    drawn = {"shifts": np.asarray(line_non.get_xdata(), dtype=float),
             "non_outlier": np.asarray(line_non.get_ydata(), dtype=float),
             "outlier": np.asarray(line_out.get_ydata(), dtype=float)}
    save_png(fig, path)
    return drawn


def plot_removal_scaling(sizes: Sequence[str], accuracy: dict[str, Sequence[float]], path: str | os.PathLike[str],
                         *, title: str = "Linear probe top-1 across scales") -> dict[str, np.ndarray]:
    """Classification accuracy per model size for each embedding (Figure 8).

    ``accuracy`` maps an embedding name (original, high_removed, low_removed) to one
    value per size.  Returns the drawn y values per embedding.
    """
    if not sizes or any(len(values) != len(sizes) for values in accuracy.values()):
        raise ValueError(f"need one accuracy per size ({len(sizes)}) for every embedding, got "
                         f"{ {k: len(v) for k, v in accuracy.items()} }")
    colours = {"original": "green", "high_removed": "royalblue", "low_removed": "crimson"}
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    drawn = {}
    for name, values in accuracy.items():
        (line,) = ax.plot(list(sizes), list(values), marker="o", label=name.replace("_", "-"),
                          color=colours.get(name))
        drawn[name] = np.asarray(line.get_ydata(), dtype=float)
    ax.set(xlabel="model size", ylabel="top-1 (%)", title=title)
    ax.legend()
    save_png(fig, path)
    return drawn


def plot_feature_maps(maps: np.ndarray, path: str | os.PathLike[str], *, feature_ids: Sequence[int],
                      cds: Sequence[float] | None = None, images: np.ndarray | None = None,
                      title: str | None = None) -> np.ndarray:
    """Grid of activation maps (Figures 9/10): one row per feature, one column per top image.

    ``maps`` is ``[n_features, n_images, side, side]`` (e.g. from
    :func:`scopebench.analyses.cds.scores.feature_maps`); ``images`` optional ``[n_features, n_images, H, W, 3]``
    in [0, 1] drawn under the maps.  Returns the ``[n_features, n_images, side, side]``
    arrays as drawn.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4 or maps.shape[2] != maps.shape[3]:
        raise ValueError(f"maps must be [n_features, n_images, side, side], got shape {maps.shape}")
    n_feat, n_img = maps.shape[:2]
    if len(feature_ids) != n_feat or (cds is not None and len(cds) != n_feat):
        raise ValueError(f"feature_ids (and cds) must have one entry per map row ({n_feat})")
    if images is not None and np.asarray(images).shape[:2] != (n_feat, n_img):
        raise ValueError(f"images must be [n_features, n_images, H, W, 3] matching maps, got {np.shape(images)}")
    fig, axes = plt.subplots(n_feat, n_img, figsize=(1.6 * n_img, 1.6 * n_feat), squeeze=False)
    drawn = np.empty_like(maps)
    for f in range(n_feat):
        for i in range(n_img):
            ax = axes[f, i]
            ax.set_axis_off()
            extent = (0.0, 1.0, 1.0, 0.0)
            if images is not None:
                ax.imshow(np.asarray(images[f][i]), extent=extent)
            peak = maps[f, i].max()
            artist = ax.imshow(maps[f, i], cmap="magma", vmin=0.0, vmax=peak if peak > 0 else 1.0,
                               alpha=0.6 if images is not None else 1.0, extent=extent, interpolation="nearest")
            drawn[f, i] = np.asarray(artist.get_array())
        label = f"#{feature_ids[f]}" + (f", CDS {cds[f]:.3f}" if cds is not None else "")
        axes[f, 0].set_title(label, fontsize=8, loc="left")
    if title:
        fig.suptitle(title)
    save_png(fig, path)
    return drawn
