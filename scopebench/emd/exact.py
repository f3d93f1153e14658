"""Exact W1 for many histogram pairs on one grid, faster than a plain loop over ``ot.emd2``.

These facts make it fast while staying exact to well within 1e-6:

* With a metric ground cost, W1(a, b) depends on a - b only (Kantorovich-Rubinstein), so the
  shared mass min(a, b) stays where it is: only the residuals a - min(a, b) and
  b - min(a, b), whose supports are disjoint and usually much smaller, enter the LP.
* If one residual sits on a single cell p, every unit of the other residual must travel to
  p: W1 = sum_j r_j C[p, j], a closed form (covers single-point maps and point pairs).
* If one residual sits on two cells p, q, cell j of the other side receives x_j from p and
  r_j - x_j from q with sum_j x_j = mass(p): a fractional knapsack, solved exactly by
  filling the cells j in increasing order of C[p, j] - C[q, j] (vectorised, no LP).
* Dense maps leave many cells with negligible residual mass (softmax tails).  Moving mass
  delta from cell i to cell k of the same side changes W1 by at most delta * C[i, k] (triangle
  inequality of the W1 norm).  So before an LP each side's lightest cells are folded, lightest
  first, into the nearest heavier cell of that side (a neighbour, typically one cell away),
  while the summed mass x distance stays within FOLD_BUDGET / 2: W1 moves by at most
  FOLD_BUDGET (1e-7 per unit mass, a tenth of the 1e-6 contract).  On the attention benchmark
  this removes 14% of each side's cells (10% when every fold was charged the grid diameter).
* Identical residual pairs (repeated maps) are solved once.
* POT's network simplex releases the GIL, so the remaining large LPs run in a thread pool,
  each on the cost sub-matrix restricted to the two supports; supports and mass balancing
  are prepared for all pairs at once, so the per-LP Python work is a slice and one call.
  Small LPs (under POOL_MIN_ARCS arcs, most sparse feature maps) run in the calling thread:
  for them two threads mostly hand the GIL back and forth and run slower than one.
* The LP lists each side's cells in increasing order of mass.  The optimum does not depend on
  the order, but POT's pivoting does: on dense maps this order needs ~25% fewer pivots than
  row-major order (measured by pivot counts: 440 -> 333 per LP on 13x13 attention maps).

Speed (bench/perf/test_emd_perf.py, 2,000 pairs on a 13x13 grid, vs a loop over ``ot.emd2``,
each side the fastest of a few rounds, 2-vCPU machine with load 0.7-1.9): sparse SAE-like maps
8.4-10.7x, dense attention-like maps 7.7-9.8x (idle, earlier runs: 9.9x and 10.4-10.8x).
Dense pairs are bound by the network simplex itself: ~67 x 67 residual cells and ~310 pivots
per LP, ~0.45 ms of CPU each, and two threads give only ~1.5x on this machine's two vCPUs.
Sparse pairs are bound by the per-call cost of many small LPs (~10-40 us each), which hold
the GIL too long to gain from threads.
Tried and slower: POT's sparse-arc solver (k-nearest arcs + dual check, and radius arcs plus
a north-west-corner plan for feasibility), block-diagonal batching of small LPs, ``emd_c``'s
warm-start potentials (4x fewer pivots even from the exact potentials, but building its start
tree costs more than it saves), costs shifted by node potentials, ``emd_c_lazy`` (3x slower),
and a numba network simplex with a least-cost start and incremental tree updates (~225 instead
of ~313 pivots, yet no faster per LP than POT, and a new dependency with a 5-7 s compile).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ot.lp.emd_wrap import emd_c
from tqdm.auto import tqdm

from scopebench.emd.cost import grid_cost, grid_neighbours

# Residual entries below this (histograms have unit mass) are float noise of min(a, b);
# dropping them moves W1 by at most ZERO_TOL * max cost * G, far below the 1e-6 contract.
ZERO_TOL = 1e-14
# Bound on the W1 change (per unit mass) from folding negligible residual mass, see above.
FOLD_BUDGET = 1e-7
# Folding looks for a heavier cell this close (patch units) before falling back to the row's largest.
FOLD_RADIUS = 2.0 * 2.0**0.5
# Network-simplex iteration cap (POT's default), ample for grids up to ~40 x 40.
MAX_ITER = 100_000
# LPs per thread-pool task (and per progress-bar step): amortises task overhead yet keeps the threads balanced.
CHUNK = 128
# LPs with fewer arcs (support_a x support_b) than this are solved in the calling thread: their
# network simplex is so short that two threads mostly trade the GIL (measured on 2 cores: 0.25x
# the serial speed at 5x5, 0.7x at 25x25, 1.5-1.7x from 30x30 up).
POOL_MIN_ARCS = 800


def exact_w1(a: np.ndarray, b: np.ndarray, side: int, *, threads: int | None = None,
             progress: bool = False) -> np.ndarray:
    """W1 per row pair of unit-mass histograms ``a``, ``b`` ([M, side**2] float64) on a ``side x side`` grid.

    Within FOLD_BUDGET (plus float rounding) of the exact optimum for every pair.
    """
    cost = grid_cost(side)
    shared = np.minimum(a, b)
    residual_a, residual_b = a - shared, b - shared
    residual_a[residual_a < ZERO_TOL] = 0.0
    residual_b[residual_b < ZERO_TOL] = 0.0
    count_a = np.count_nonzero(residual_a, axis=1)
    count_b = np.count_nonzero(residual_b, axis=1)
    allowance = FOLD_BUDGET / 2.0  # per side
    for residual, count in ((residual_a, count_a), (residual_b, count_b)):
        # only rows bound for an LP gain from folding; the closed forms below are exact anyway
        needs_lp = (count_a > 2) & (count_b > 2)
        foldable = np.flatnonzero(needs_lp & ((residual > 0.0) & (residual <= allowance)).any(axis=1))
        if foldable.size:
            residual[foldable] = _fold_negligible(residual[foldable], allowance, side)
            count[foldable] = np.count_nonzero(residual[foldable], axis=1)

    out = np.zeros(a.shape[0])  # rows with an empty residual: a == b up to float noise, W1 = 0
    active = (count_a > 0) & (count_b > 0)
    point_a = active & (count_a == 1)
    point_b = active & (count_b == 1) & ~point_a
    out[point_a] = _point_to_distribution(residual_a[point_a], residual_b[point_a], cost)
    out[point_b] = _point_to_distribution(residual_b[point_b], residual_a[point_b], cost)
    pair_a = active & (count_a == 2) & (count_b > 1)
    pair_b = active & (count_b == 2) & (count_a > 2)
    out[pair_a] = _two_points_to_distribution(residual_a[pair_a], residual_b[pair_a], cost)
    out[pair_b] = _two_points_to_distribution(residual_b[pair_b], residual_a[pair_b], cost)
    general = np.flatnonzero(active & (count_a > 2) & (count_b > 2))
    if general.size:
        out[general] = _solve_unique(residual_a[general], residual_b[general], cost, threads, progress)
    return out


def _fold_negligible(residual: np.ndarray, allowance: float, side: int) -> np.ndarray:
    """Fold each row's smallest entries into nearby heavier cells, at most ``allowance`` W1 in total.

    Cells are visited in increasing order of mass.  A visited cell's mass (its own plus what was
    folded into it) moves to its parent, the nearest cell within FOLD_RADIUS that comes later in
    that order (else the row's largest cell), if mass x distance still fits in what is left of
    the row's allowance.  Each move changes W1 by at most mass x distance (triangle inequality),
    so the folded row is within ``allowance`` of the original in W1.  A row stops once its next
    cell's own mass exceeds what is left: every later move would cost more.
    """
    count, bins = residual.shape
    cost = grid_cost(side)
    neighbours, distance = grid_neighbours(side, FOLD_RADIUS)
    order = np.argsort(residual, axis=1, kind="stable")
    rank = np.empty((count, bins + 1), dtype=np.int32)
    rank[:, -1] = -1  # the off-grid sentinel never becomes a parent
    np.put_along_axis(rank, order, np.arange(bins)[None], axis=1)
    largest = order[:, -1]
    position = bins - np.count_nonzero(residual, axis=1)  # each row's lightest non-zero cell
    folded = residual.copy()
    left = np.full(count, allowance)
    rows = np.arange(count)
    while rows.size:
        cell = order[rows, position[rows]]
        fits = residual[rows, cell] <= left[rows]  # else every later cell of the row costs more
        rows, cell = rows[fits], cell[fits]
        later = rank[rows[:, None], neighbours[cell]] > position[rows, None]
        nearest = later.argmax(axis=1)
        has_near = later[np.arange(rows.size), nearest]
        parent = np.where(has_near, neighbours[cell, nearest], largest[rows])
        hop = np.where(has_near, distance[nearest], cost[cell, largest[rows]])
        spend = folded[rows, cell] * hop
        move = spend <= left[rows]
        folded[rows[move], parent[move]] += folded[rows[move], cell[move]]
        folded[rows[move], cell[move]] = 0.0
        left[rows[move]] -= spend[move]
        position[rows] += 1
        rows = rows[position[rows] < bins - 1]  # the largest cell stays
    return folded


def _point_to_distribution(point: np.ndarray, spread: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Closed form when each row of ``point`` has one non-zero cell p: sum_j spread_j C[p, j]."""
    cell = point.argmax(axis=1)
    return np.einsum("mg,mg->m", spread, cost[cell])


def _two_points_to_distribution(pair: np.ndarray, spread: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Closed form when each row of ``pair`` has two non-zero cells p < q (greedy fractional knapsack)."""
    rows = np.arange(pair.shape[0])
    cells = np.nonzero(pair)[1].reshape(-1, 2)
    mass_p = pair[rows, cells[:, 0]]
    cost_p, cost_q = cost[cells[:, 0]], cost[cells[:, 1]]
    extra = cost_p - cost_q  # extra cost per unit sent from p instead of q
    order = np.argsort(extra, axis=1, kind="stable")
    demand = np.take_along_axis(spread, order, axis=1)
    before = np.cumsum(demand, axis=1) - demand
    from_p = np.clip(mass_p[:, None] - before, 0.0, demand)
    return np.einsum("mg,mg->m", spread, cost_q) + np.einsum("mg,mg->m", from_p, np.take_along_axis(extra, order, axis=1))


def _solve_unique(residual_a: np.ndarray, residual_b: np.ndarray, cost: np.ndarray,
                  threads: int | None, progress: bool) -> np.ndarray:
    """Network simplex on each distinct residual pair: large LPs in a thread pool, small ones inline."""
    unique, inverse = _distinct_rows(np.concatenate([residual_a, residual_b], axis=1))
    bins = residual_a.shape[1]
    supports_a = _supports(unique[:, :bins])
    supports_b = _supports(unique[:, bins:])
    # equal masses up to float noise, but the LP needs them exact: rescale each demand side
    balance = unique[:, :bins].sum(axis=1) / unique[:, bins:].sum(axis=1)
    arcs = np.count_nonzero(unique[:, :bins], axis=1) * np.count_nonzero(unique[:, bins:], axis=1)
    workers = threads if threads is not None else (os.cpu_count() or 1)
    pooled = np.flatnonzero(arcs >= POOL_MIN_ARCS) if workers > 1 else np.empty(0, dtype=np.intp)
    inline = np.setdiff1d(np.arange(len(unique)), pooled)
    values = np.empty(len(unique))

    def solve(rows: np.ndarray) -> np.ndarray:
        return np.array([_support_lp(*supports_a[i], supports_b[i][0], supports_b[i][1] * balance[i], cost)
                         for i in rows])

    with tqdm(total=len(unique), desc="exact EMD", disable=not progress) as bar:
        if pooled.size:
            chunks = [pooled[start:start + CHUNK] for start in range(0, pooled.size, CHUNK)]
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for rows, solved in zip(chunks, pool.map(solve, chunks)):
                    values[rows] = solved
                    bar.update(rows.size)
        for start in range(0, inline.size, CHUNK):
            rows = inline[start:start + CHUNK]
            values[rows] = solve(rows)
            bar.update(rows.size)
    return values[inverse]


def _distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows (first occurrences, in order) and the index of each row among them.

    Rows are grouped by a fingerprint (their dot product with a fixed random vector), several
    times cheaper than hashing each row's bytes or ``np.unique(axis=0)``'s lexsort.  Every group
    is then checked row by row; if two different rows share a fingerprint (rare: e.g. rows one
    ulp apart) the bytes are hashed instead, so different rows are never merged.
    """
    fingerprint = rows @ np.random.default_rng(0).random(rows.shape[1])
    _, first, group = np.unique(fingerprint, return_index=True, return_inverse=True)
    if not (rows == rows[first[group]]).all():
        slot_of: dict[bytes, int] = {}
        group = np.fromiter((slot_of.setdefault(row.tobytes(), len(slot_of)) for row in rows),
                            dtype=np.intp, count=len(rows))
        _, first = np.unique(group, return_index=True)
    by_appearance = np.argsort(first)
    slot = np.empty_like(by_appearance)
    slot[by_appearance] = np.arange(len(first))
    return rows[first[by_appearance]], slot[group.reshape(-1)]


def _supports(histograms: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per row: (cells with mass, their masses) in increasing order of mass, for all rows in one pass.

    The order is the order of the LP's nodes: POT's network simplex (initial pivots, block
    search) needs about a quarter fewer pivots on these maps when light cells come first.
    Only the non-zero entries are sorted, which keeps sparse feature maps cheap.
    """
    row, cell = np.nonzero(histograms)
    mass = histograms[row, cell]
    by_mass = np.argsort(mass, kind="stable")
    order = by_mass[np.argsort(row[by_mass], kind="stable")]  # rows in turn, each in increasing mass
    cell, mass = cell[order], mass[order]
    ends = np.cumsum(np.count_nonzero(histograms, axis=1)).tolist()
    return [(cell[start:end], mass[start:end]) for start, end in zip([0] + ends[:-1], ends)]


def _support_lp(cells_a: np.ndarray, supply: np.ndarray, cells_b: np.ndarray, demand: np.ndarray,
                cost: np.ndarray) -> float:
    """Optimal transport cost from ``supply`` on ``cells_a`` to ``demand`` (same total) on ``cells_b``."""
    # a C-ordered copy, as emd_c needs; two takes are ~2x faster than cost[cells_a[:, None], cells_b]
    sub_cost = cost.take(cells_a, axis=0).take(cells_b, axis=1)
    _, value, _, _, status = emd_c(supply, demand, sub_cost, MAX_ITER, 1)
    if status != 1:  # 1 == OPTIMAL in POT's network simplex
        raise RuntimeError(f"network simplex did not reach the optimum (status {status}) on a "
                           f"{len(cells_a)}x{len(cells_b)} problem; raise scopebench.emd.exact.MAX_ITER")
    return float(value)
