"""Figures of the scope analyses, saved atomically as PNG (matplotlib, Agg backend).

Each function saves one figure and returns the data it actually drew, read back from
the figure's artists, so callers and tests can check the picture against the numbers.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

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


def plot_cds_histograms(histograms: Mapping[str, tuple[Sequence[float], Sequence[int]]],
                        gammas: Mapping[str, float | None], path: str | os.PathLike[str], *,
                        title: str = "CDS distribution") -> dict[str, dict[str, np.ndarray | float]]:
    """Figure 6 for one or several SAEs: each one's ``(edges, counts)`` as a step line, gamma dashed.

    With one SAE the counts are drawn as they are (features per bin); with several, as the
    fraction of each SAE's scored features, so dictionaries of different sizes compare.
    Returns per name ``{"edges", "heights", "gamma"}`` as drawn (gamma NaN when not drawn).
    """
    if not histograms:
        raise ValueError("no CDS histogram to plot")
    for name, (edges, counts) in histograms.items():
        if len(edges) != len(counts) + 1 or not len(counts):
            raise ValueError(f"{name}: a histogram needs len(edges) == len(counts) + 1 > 1, got "
                             f"{len(edges)} edges and {len(counts)} counts")
    fraction = len(histograms) > 1
    fig, ax = plt.subplots(figsize=(5, 3.2))
    drawn: dict[str, dict[str, np.ndarray | float]] = {}
    for name, (edges, counts) in histograms.items():
        heights = np.asarray(counts, dtype=np.float64)
        if fraction:
            heights = heights / max(heights.sum(), 1.0)
        (line,) = ax.step(edges, np.append(heights, heights[-1]), where="post", label=name)
        gamma = gammas.get(name)
        gamma = None if gamma is None or not math.isfinite(gamma) else gamma
        if gamma is not None:
            marker = ax.axvline(gamma, color=line.get_color(), linestyle="--", linewidth=1)
        drawn[name] = {"edges": np.asarray(line.get_xdata(), dtype=float),
                       "heights": np.asarray(line.get_ydata(), dtype=float)[:-1],
                       "gamma": float(marker.get_xdata()[0]) if gamma is not None else math.nan}
    ax.set(xlabel="CDS (dashed: gamma)", ylabel="fraction of features" if fraction else "features", title=title)
    ax.legend(fontsize=8)
    save_png(fig, path)
    return drawn


_AWCDS_COLUMNS = {"bin", "is_top", "pct_hi", "mean_awcds"}


def plot_awcds_by_norm(tables: Mapping[str, pd.DataFrame], path: str | os.PathLike[str], *,
                       title: str = "awCDS across the token-norm spectrum") -> dict[str, dict[str, np.ndarray]]:
    """Mean awCDS per norm-percentile bin (Figure 7), one line per SAE, from awcds_by_norm_percentile's tables.

    The equal-width percentile bins are drawn as a line over their upper percentile; a "top"
    row (top fraction of tokens) as a star in the line's colour. Returns per name
    ``{"x", "y"}`` of the line and ``{"top_x", "top_y"}`` of the marker (empty without a top row).
    """
    for name, table in tables.items():
        missing = _AWCDS_COLUMNS - set(table.columns)
        if missing:
            raise ValueError(f"{name}: table lacks columns {sorted(missing)}; pass awcds_by_norm_percentile's output")
    if not tables:
        raise ValueError("no awCDS table to plot")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    drawn = {}
    for name, table in tables.items():
        is_top = table["is_top"].astype(bool)
        bins, top = table[~is_top], table[is_top]
        y = bins["mean_awcds"].to_numpy(dtype=float)
        (line,) = ax.plot(bins["pct_hi"].to_numpy(dtype=float), y, marker="o", markersize=3, label=name)
        (marker,) = ax.plot(top["pct_hi"].to_numpy(dtype=float), top["mean_awcds"].to_numpy(dtype=float), "*",
                            color=line.get_color(), markersize=12)
        drawn[name] = {"x": np.asarray(line.get_xdata(), dtype=float), "y": np.asarray(line.get_ydata(), dtype=float),
                       "top_x": np.asarray(marker.get_xdata(), dtype=float),
                       "top_y": np.asarray(marker.get_ydata(), dtype=float)}
    top_label = next((str(t.loc[t["is_top"].astype(bool), "bin"].iloc[0]) for t in tables.values()
                      if t["is_top"].astype(bool).any()), "top")
    ax.set(xlabel=f"token-norm percentile (star: {top_label})", ylabel="mean awCDS", title=title)
    ax.legend(fontsize=8)
    save_png(fig, path)
    return drawn


def plot_removal_deltas(deltas: pd.DataFrame, path: str | os.PathLike[str], *,
                        title: str = "What removing each feature group does") -> np.ndarray:
    """Grouped bars: one group per column (e.g. "cls, high removed"), one bar per row (SAE).

    ``deltas`` holds probe score with the group removed minus the original, in each task's unit.
    Returns the drawn bar heights ``[rows, columns]`` (NaN where a value is missing).
    """
    if deltas.empty:
        raise ValueError("no removal deltas to plot")
    values = deltas.to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    width = 0.8 / n_rows
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * n_cols + 1.5), 3.2))
    heights = np.full_like(values, np.nan)
    for r, name in enumerate(deltas.index):
        bars = ax.bar(np.arange(n_cols) + (r - (n_rows - 1) / 2) * width, np.nan_to_num(values[r]), width,
                      label=str(name))
        heights[r] = [bar.get_height() if np.isfinite(v) else np.nan for bar, v in zip(bars, values[r])]
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    ax.set_xticks(np.arange(n_cols), [str(c) for c in deltas.columns], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="removed - original", title=title)
    ax.legend(fontsize=8)
    save_png(fig, path)
    return heights


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
