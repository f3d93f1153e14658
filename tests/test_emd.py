"""scopebench.emd against POT's exact solver (ot.emd2 on the full cost matrix) and by hand."""
from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from scopebench.emd import grid_cost, grid_w1
from scopebench.emd.cost import grid_neighbours
from scopebench.emd.exact import FOLD_BUDGET, _distinct_rows, _fold_negligible, _supports


def reference_w1(a: np.ndarray, b: np.ndarray, side: int) -> np.ndarray:
    """The plain loop the engine must agree with: ot.emd2 per pair, full cost matrix."""
    u, v = np.divmod(np.arange(side * side), side)
    cost = np.sqrt((u[:, None] - u[None, :]) ** 2 + (v[:, None] - v[None, :]) ** 2).astype(np.float64)
    return np.array([ot.emd2(x / x.sum(), y / y.sum(), cost) for x, y in zip(a, b)])


def dense_maps(rng: np.random.Generator, m: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    g = side * side
    return rng.random((m, g)) ** 3, rng.random((m, g)) ** 3


def sparse_maps(rng: np.random.Generator, m: int, side: int, density: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    g = side * side
    a = rng.random((m, g)) * (rng.random((m, g)) < density)
    b = rng.random((m, g)) * (rng.random((m, g)) < density)
    a[:, 0] += 1e-3  # keep every row non-empty
    b[:, -1] += 1e-3
    return a, b


def attention_maps(rng: np.random.Generator, m: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax rows peaked around a query cell plus noise, two noisy views of the same query."""
    g = side * side
    row, col = np.divmod(np.arange(g), side)
    qr, qc = np.divmod(rng.integers(0, g, m), side)
    dist2 = (row[None] - qr[:, None]) ** 2 + (col[None] - qc[:, None]) ** 2
    width = rng.uniform(1.0, 3.0, (m, 1))
    logits = -dist2 / (2 * width**2)
    a = np.exp(logits + rng.normal(0, 1, (m, g)))
    b = np.exp(logits + rng.normal(0, 1, (m, g)))
    return a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)


def test_hand_check_unit_masses_at_offset_3_4_are_5_apart() -> None:
    a, b = np.zeros((1, 49)), np.zeros((1, 49))
    a[0, 0], b[0, 3 * 7 + 4] = 1.0, 1.0
    assert grid_w1(a, b, 7)[0] == pytest.approx(5.0, abs=1e-12)


def test_hand_check_half_mass_moves_one_cell() -> None:
    # a = 1/2 on (0,0) + 1/2 on (0,1); b = all on (0,0): half the mass moves distance 1.
    a, b = np.zeros((1, 9)), np.zeros((1, 9))
    a[0, 0], a[0, 1], b[0, 0] = 1.0, 1.0, 3.0
    assert grid_w1(a, b, 3)[0] == pytest.approx(0.5, abs=1e-12)


def test_grid_cost_is_euclidean_between_centres() -> None:
    cost = grid_cost(4)
    assert cost.shape == (16, 16)
    assert cost[0, 15] == pytest.approx(np.hypot(3, 3))
    assert cost[5, 6] == 1.0 and cost[1, 4] == pytest.approx(np.sqrt(2))
    np.testing.assert_array_equal(cost, cost.T)
    with pytest.raises(ValueError):
        cost[0, 1] = 7.0  # the cached matrix is read-only


@pytest.mark.parametrize("side", [3, 7, 13])
@pytest.mark.parametrize("kind", ["dense", "sparse", "attention"])
def test_exact_matches_ot_emd2(side: int, kind: str) -> None:
    rng = np.random.default_rng(side)
    maker = {"dense": dense_maps, "sparse": sparse_maps, "attention": attention_maps}[kind]
    a, b = maker(rng, 40 if side == 13 else 80, side)
    np.testing.assert_allclose(grid_w1(a, b, side), reference_w1(a, b, side), rtol=0, atol=1e-6)


@pytest.mark.parametrize("side", range(2, 24))
def test_exact_matches_ot_emd2_on_every_overlap_side(side: int) -> None:
    """Sides 2..23 cover the SCC overlap grids of 14x14 up to 24x24 patch grids (L/14-336)."""
    rng = np.random.default_rng(300 + side)
    g, m = side * side, 4 if side > 15 else 8
    point = np.zeros((m, g))
    point[np.arange(m), rng.integers(0, g, m)] = 1.0
    dense_a, dense_b = attention_maps(rng, m, side)
    sparse_a, sparse_b = sparse_maps(rng, m, side)
    a = np.concatenate([dense_a, sparse_a, point, dense_a, dense_a])
    b = np.concatenate([dense_b, sparse_b, dense_b, point, dense_a])  # the last block: identical maps
    result = grid_w1(a, b, side)
    np.testing.assert_allclose(result, reference_w1(a, b, side), rtol=0, atol=1e-6)
    np.testing.assert_allclose(result[-m:], 0.0, atol=1e-12)


@pytest.mark.parametrize("side", [3, 7, 13])
def test_single_point_and_point_vs_distribution(side: int) -> None:
    rng = np.random.default_rng(100 + side)
    g = side * side
    m = 60
    points_a = np.zeros((m, g))
    points_a[np.arange(m), rng.integers(0, g, m)] = rng.uniform(0.5, 2.0, m)
    points_b = np.zeros((m, g))
    points_b[np.arange(m), rng.integers(0, g, m)] = 1.0
    spread = sparse_maps(rng, m, side, density=0.3)[0]
    a = np.concatenate([points_a, points_a, spread])
    b = np.concatenate([points_b, spread, points_b])
    np.testing.assert_allclose(grid_w1(a, b, side), reference_w1(a, b, side), rtol=0, atol=1e-6)


@pytest.mark.parametrize("side", [3, 7, 13])
def test_two_point_maps_against_distributions(side: int) -> None:
    rng = np.random.default_rng(200 + side)
    g, m = side * side, 60
    two = np.zeros((m, g))
    for row in range(m):
        two[row, rng.choice(g, 2, replace=False)] = rng.uniform(0.1, 1.0, 2)
    spread = sparse_maps(rng, m, side, density=0.4)[0]
    three = np.zeros((m, g))
    for row in range(m):
        three[row, rng.choice(g, 3, replace=False)] = rng.uniform(0.1, 1.0, 3)
    a = np.concatenate([two, spread, two, three])
    b = np.concatenate([spread, two, np.roll(two, 1, axis=0), two])
    np.testing.assert_allclose(grid_w1(a, b, side), reference_w1(a, b, side), rtol=0, atol=1e-6)


def test_identical_and_rescaled_maps_are_zero() -> None:
    rng = np.random.default_rng(1)
    a, _ = dense_maps(rng, 20, 7)
    sparse, _ = sparse_maps(rng, 20, 7)
    result = grid_w1(np.concatenate([a, sparse]), np.concatenate([a * 3.0, sparse]), 7)
    np.testing.assert_allclose(result, 0.0, atol=1e-9)


def test_different_supports_and_shared_bins() -> None:
    # a lives on the left half, b on the right half plus some shared cells.
    rng = np.random.default_rng(2)
    side, m = 7, 50
    col = np.arange(side * side) % side
    a = rng.random((m, side * side)) * (col < 3)
    b = rng.random((m, side * side)) * (col >= 3)
    b[:, 0] += rng.random(m)
    np.testing.assert_allclose(grid_w1(a, b, side), reference_w1(a, b, side), rtol=0, atol=1e-6)


def test_repeated_pairs_get_the_same_answer() -> None:
    rng = np.random.default_rng(3)
    a, b = sparse_maps(rng, 10, 7, density=0.4)
    a, b = np.tile(a, (5, 1)), np.tile(b, (5, 1))
    result = grid_w1(a, b, 7)
    np.testing.assert_allclose(result, reference_w1(a, b, 7), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.reshape(5, 10), np.tile(result[:10], (5, 1)))


def test_torch_and_numpy_inputs_agree() -> None:
    rng = np.random.default_rng(4)
    a, b = sparse_maps(rng, 30, 7)
    from_numpy = grid_w1(a, b, 7)
    from_torch = grid_w1(torch.from_numpy(a).float(), torch.from_numpy(b).float(), 7)
    assert from_torch.dtype == np.float64 and from_torch.shape == (30,)
    np.testing.assert_allclose(from_torch, reference_w1(a.astype(np.float32), b.astype(np.float32), 7),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(from_torch, from_numpy, rtol=0, atol=1e-5)  # float32 rounding only


def test_thread_counts_give_identical_results() -> None:
    rng = np.random.default_rng(5)
    a, b = attention_maps(rng, 300, 7)
    np.testing.assert_array_equal(grid_w1(a, b, 7, threads=1), grid_w1(a, b, 7, threads=2))


def test_empty_rows_give_nan_and_others_are_unaffected() -> None:
    rng = np.random.default_rng(6)
    a, b = sparse_maps(rng, 6, 5)
    a[1] = 0.0
    b[4] = 0.0
    result = grid_w1(a, b, 5)
    assert np.isnan(result[[1, 4]]).all()
    keep = [0, 2, 3, 5]
    np.testing.assert_allclose(result[keep], reference_w1(a[keep], b[keep], 5), rtol=0, atol=1e-6)
    assert np.isnan(grid_w1(a, b, 5, method="sinkhorn")[[1, 4]]).all()


def test_unnormalised_equal_mass_scales_the_distance() -> None:
    a, b = np.zeros((2, 9)), np.zeros((2, 9))
    a[:, 0], b[:, 2] = 4.0, 4.0  # mass 4 moved 2 cells
    np.testing.assert_allclose(grid_w1(a, b, 3, normalise=False), [8.0, 8.0])
    b[1, 2] = 3.0
    with pytest.raises(ValueError, match="equal mass"):
        grid_w1(a, b, 3, normalise=False)


@pytest.mark.parametrize(
    ("a", "b", "side", "message"),
    [
        (np.ones(9), np.ones(9), 3, r"\[M, side\*side\]"),
        (np.ones((2, 9)), np.ones((2, 9)), 4, "needs 16"),
        (np.ones((2, 9)), np.ones((3, 9)), 3, "same number"),
        (-np.ones((2, 9)), np.ones((2, 9)), 3, "negative mass"),
        (np.full((2, 9), np.nan), np.ones((2, 9)), 3, "NaN"),
        (np.ones((2, 9)), np.ones((2, 9)), 0, "positive int"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(a: np.ndarray, b: np.ndarray, side: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grid_w1(a, b, side)


def test_unknown_method_and_bad_threads_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown EMD method"):
        grid_w1(np.ones((1, 4)), np.ones((1, 4)), 2, method="greedy")
    with pytest.raises(ValueError, match="threads"):
        grid_w1(np.ones((1, 4)), np.ones((1, 4)), 2, threads=0)


@pytest.mark.parametrize("side", [7, 13])
def test_sinkhorn_is_within_one_percent_on_attention_like_maps(side: int) -> None:
    rng = np.random.default_rng(7 + side)
    a, b = attention_maps(rng, 40, side)
    exact = grid_w1(a, b, side)
    approx = grid_w1(a, b, side, method="sinkhorn")
    relative = np.abs(approx - exact) / exact
    assert relative.mean() <= 0.01
    assert (approx <= exact + 1e-9).all()  # the c-transformed dual value is a lower bound


def test_sinkhorn_exact_on_trivial_pairs() -> None:
    a, b = np.zeros((2, 25)), np.zeros((2, 25))
    a[0, 0], b[0, 24] = 1.0, 1.0  # corner to corner: 4*sqrt(2)
    a[1, 7], b[1, 7] = 1.0, 2.0  # identical shape: 0
    np.testing.assert_allclose(grid_w1(a, b, 5, method="sinkhorn"), [4 * np.sqrt(2), 0.0], atol=1e-3)


def test_folding_negligible_tails_stays_within_its_budget_of_ot_emd2() -> None:
    # Narrow softmax rows: their far tails hold residual entries far below the fold allowance.
    rng = np.random.default_rng(8)
    side = 9
    a, b = attention_maps(rng, 60, side)
    a, b = a**3, b**3  # sharpen: tails drop to ~1e-20 of the peak
    allowance = FOLD_BUDGET / 2.0  # per side; a fold moves mass at least one cell
    unit_a, unit_b = a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)
    residual = unit_a - np.minimum(unit_a, unit_b)
    assert ((residual > 0) & (residual <= allowance)).any(axis=1).mean() > 0.5  # folding really happens
    np.testing.assert_allclose(grid_w1(a, b, side), reference_w1(a, b, side), rtol=0, atol=FOLD_BUDGET + 1e-12)


def grid_row(side: int, cells: dict[tuple[int, int], float]) -> np.ndarray:
    """One ``[1, side*side]`` residual row with the given (row, col) -> mass entries."""
    row = np.zeros((1, side * side))
    for (r, c), mass in cells.items():
        row[0, r * side + c] = mass
    return row


def test_fold_negligible_moves_light_cells_into_the_nearest_heavier_cell() -> None:
    # (0,1) is next to the peak: costs 1e-10 * 1.  (2,2) is 2*sqrt(2) from the peak and nearer to
    # no heavier cell: costs 3e-10 * 2.83 = 8.5e-10.
    row = grid_row(3, {(0, 0): 0.5, (0, 1): 1e-10, (2, 2): 3e-10})
    np.testing.assert_array_equal(_fold_negligible(row, 1e-9, 3), grid_row(3, {(0, 0): 0.5 + 4e-10}))
    np.testing.assert_array_equal(_fold_negligible(row, 5e-10, 3), grid_row(3, {(0, 0): 0.5 + 1e-10, (2, 2): 3e-10}))
    np.testing.assert_array_equal(_fold_negligible(row, 5e-11, 3), row)


def test_fold_negligible_carries_folded_mass_along_a_chain() -> None:
    # (0,0) folds into its heavier neighbour (0,1) for 1e-10; (0,1) then carries 3e-10 two cells
    # to the peak for 6e-10 more.
    row = grid_row(4, {(0, 0): 1e-10, (0, 1): 2e-10, (0, 3): 1.0})
    np.testing.assert_array_equal(_fold_negligible(row, 7.5e-10, 4), grid_row(4, {(0, 3): 1.0 + 3e-10}))
    np.testing.assert_array_equal(_fold_negligible(row, 6e-10, 4), grid_row(4, {(0, 1): 3e-10, (0, 3): 1.0}))


def test_fold_negligible_falls_back_to_the_largest_cell_beyond_the_radius() -> None:
    row = grid_row(5, {(0, 0): 1e-10, (4, 4): 1.0})  # 4*sqrt(2) apart, beyond the neighbour radius
    np.testing.assert_array_equal(_fold_negligible(row, 6e-10, 5), grid_row(5, {(4, 4): 1.0 + 1e-10}))
    np.testing.assert_array_equal(_fold_negligible(row, 5e-10, 5), row)  # 5.66e-10 does not fit


def test_fold_negligible_keeps_mass_and_stays_within_its_allowance_of_ot_emd2() -> None:
    rng = np.random.default_rng(10)
    side = 6
    rows = rng.random((40, side * side)) ** 12 * (rng.random((40, side * side)) < 0.7)
    allowance = 1e-4
    folded = _fold_negligible(rows, allowance, side)
    np.testing.assert_allclose(folded.sum(axis=1), rows.sum(axis=1), rtol=1e-12)
    assert (np.count_nonzero(folded, axis=1) < np.count_nonzero(rows, axis=1)).mean() > 0.5
    moved = np.array([ot.emd2(x, y, np.array(grid_cost(side))) for x, y in zip(rows, folded)])
    assert (moved <= allowance * (1 + 1e-9)).all()
    assert moved.max() > allowance / 4  # the allowance is used, not wasted


def test_grid_neighbours_are_within_the_radius_nearest_first() -> None:
    ids, distance = grid_neighbours(4, 2.0)
    assert distance.tolist() == sorted(distance.tolist()) and len(distance) == 12  # 4 + 4 diagonals + 4
    cost = grid_cost(4)
    for cell in range(16):
        inside = ids[cell] < 16
        np.testing.assert_allclose(cost[cell, ids[cell][inside]], distance[inside])
        assert set(ids[cell][inside]) == set(np.flatnonzero((cost[cell] > 0) & (cost[cell] <= 2.0)))


def test_distinct_rows_and_supports_match_numpy() -> None:
    rng = np.random.default_rng(9)
    base = rng.random((7, 12)) * (rng.random((7, 12)) < 0.4)
    rows = base[rng.integers(0, 7, 40)]
    unique, inverse = _distinct_rows(rows)
    np.testing.assert_array_equal(unique[inverse], rows)
    assert len(unique) == len(np.unique(rows, axis=0))
    first_seen = [int(np.flatnonzero((rows == u).all(axis=1))[0]) for u in unique]
    assert first_seen == sorted(first_seen)  # distinct rows keep their order of first appearance
    for row, (cells, mass) in zip(rows, _supports(rows)):
        assert sorted(cells.tolist()) == np.flatnonzero(row).tolist()
        np.testing.assert_array_equal(mass, row[cells])
        assert (np.diff(mass) >= 0).all()  # light cells first: the node order the LP is fastest with


def test_distinct_rows_never_merges_rows_that_differ_by_one_ulp() -> None:
    base = np.random.default_rng(4).random(12)
    nudged = base.copy()
    nudged[5] = np.nextafter(nudged[5], 2.0)  # same fingerprint up to rounding, yet a different row
    rows = np.stack([base, nudged, base, nudged, base])
    unique, inverse = _distinct_rows(rows)
    assert inverse.tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_array_equal(unique[inverse], rows)
