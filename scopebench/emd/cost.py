"""Ground cost of the SCC overlap grid: Euclidean distance between patch centres, in patch units."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def grid_cost(side: int) -> np.ndarray:
    """``[G, G]`` float64 distances between the cells of a ``side x side`` grid (row-major), G = side**2.

    Cached and read-only: callers must copy before writing into it.
    """
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1:
        raise ValueError(f"grid side must be a positive int, got {side!r}")
    row, col = np.divmod(np.arange(side * side), side)
    cost = np.hypot(row[:, None] - row[None, :], col[:, None] - col[None, :]).astype(np.float64)
    cost.flags.writeable = False
    return cost


@lru_cache(maxsize=64)
def grid_neighbours(side: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Cells within ``radius`` of each cell of a ``side x side`` grid, nearest first.

    Returns ``[G, K]`` int64 cell ids and ``[K]`` float64 distances, K = the number of offsets
    (dy, dx) != (0, 0) with length <= radius, sorted by length (ties in row-major order of the
    offset).  Offsets that leave the grid give id G, a sentinel one past the last cell.
    Cached and read-only.
    """
    grid_cost(side)  # validates side
    reach = int(np.floor(radius))
    dy, dx = np.divmod(np.arange((2 * reach + 1) ** 2), 2 * reach + 1)
    dy, dx = dy - reach, dx - reach
    length = np.hypot(dy, dx)
    keep = (length > 0) & (length <= radius)
    order = np.argsort(length[keep], kind="stable")
    dy, dx, length = dy[keep][order], dx[keep][order], length[keep][order]
    row, col = np.divmod(np.arange(side * side), side)
    target_row, target_col = row[:, None] + dy[None], col[:, None] + dx[None]
    inside = (target_row >= 0) & (target_row < side) & (target_col >= 0) & (target_col < side)
    ids = np.where(inside, target_row * side + target_col, side * side)
    ids.flags.writeable = False
    length.flags.writeable = False
    return ids, length
