"""A 2-rank torchrun launch (gloo, CPU) of extraction, attention EMD and CDS gives a one-process run's results.

Both runs use one thread per process (torchrun's default), so every image goes through the same
arithmetic in both: shard files must be bit-identical, top-k image lists and counts equal, and
the float64 sums (reduced over ranks in another order) equal within Higham's bound for the
number of terms summed.  The kill-and-resume and concurrent-launch cases are in tests/faults.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from distributed_launch import run_driver
from scopebench import distributed

U64 = 2.0**-53  # unit roundoff of float64


def gamma(n: int) -> float:
    """Higham's gamma_n: relative error bound of a sum of n non-negative float64 terms, in any order."""
    return n * U64 / (1 - n * U64)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    root = tmp_path_factory.mktemp("distributed")
    one = run_driver(root / "cache-one", root / "one.json", ranks=1)
    two = run_driver(root / "cache-two", root / "two.json", ranks=2)
    return one, two


def test_two_ranks_write_the_same_shards_as_one_process(runs):
    one, two = runs
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for name in ("tokens", "scc"):
        assert len(one["entries"][name]["shards"]) > 2 * 3  # several shards per rank, so the split is exercised
        assert two["entries"][name] == one["entries"][name]  # same layout, files, sha256; complete and sealed
        assert two["entries"][name]["sealed"] and two["entries"][name]["complete"]
    # rank r wrote shards r, r + 2, ...: both ranks did their half, nobody wrote a shard twice
    for kind, n_shards in (("tokens", len(one["entries"]["tokens"]["shards"]) // 3),
                           ("scc-s2", len(one["entries"]["scc"]["shards"]) // 5)):
        written = [two["shards_written"].get(kind, 0), two["ranks"][0]["shards_written"].get(kind, 0)]
        assert written == [(n_shards + 1) // 2, n_shards // 2], kind
    assert one["shards_written"] == {}  # one process writes through the entry's own writer


def test_a_failure_on_one_rank_is_raised_on_every_rank(runs):
    _, two = runs
    rank0, rank1 = two["errors"], two["ranks"][0]["errors"]
    assert rank1["together"] == "ValueError: boom on rank 1"
    assert rank0["together"].startswith("RankFailed: rank(s) [1] of 2 failed at a step that fails on rank 1")
    assert rank0["from_main"] == "KeyError: 'no such thing on rank 0'"
    assert rank1["from_main"] == "RankFailed: rank 0 failed at a step rank 0 fails: KeyError: 'no such thing on rank 0'"


def test_two_ranks_give_one_process_attention_emd(runs):
    one, two = (run["attention_emd"] for run in runs)
    assert (two["n_outlier"], two["n_non_outlier"]) == (one["n_outlier"], one["n_non_outlier"])
    assert one["n_outlier"] > 0 and one["n_non_outlier"] > 0
    for group, count in (("outlier", one["n_outlier"]), ("non_outlier", one["n_non_outlier"])):
        # mean = sum / count: the sum of `count` non-negative terms in another order, then one division
        assert math.isclose(two[group], one[group], rel_tol=gamma(count) + 2 * U64, abs_tol=0)


def test_two_ranks_give_one_process_cds(runs):
    one, two = (run["cds"] for run in runs)
    assert two["top_images"] == one["top_images"] and two["n_images_used"] == one["n_images_used"]
    cds_one, cds_two = (np.array(c["cds"], dtype=float) for c in (one, two))
    used = np.array(one["n_images_used"])
    assert (used > 0).sum() > 10 and np.array_equal(np.isnan(cds_one), np.isnan(cds_two))
    ok = used > 0
    # CDS_j = (sum of n_j W1 terms) / (n_j D): gamma_{n_j} for the sum, a few roundings for the division
    bound = (used[ok] * U64 / (1 - used[ok] * U64) + 4 * U64) * np.abs(cds_one[ok])
    assert np.all(np.abs(cds_two[ok] - cds_one[ok]) <= bound)


def test_one_process_helpers_are_the_identity_of_a_one_rank_launch():
    assert not distributed.active() and (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.share(range(5)) == [0, 1, 2, 3, 4]
    assert distributed.from_main(lambda: {"a": 1}, "test") == {"a": 1}
    counts = np.array([3, 4])
    assert np.array_equal(distributed.sum_over_ranks(counts, "test"), counts)
    assert [a.tolist() for a in distributed.gather(counts, "test")] == [[3, 4]]


def test_timeout_must_be_a_positive_number(monkeypatch):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="SCOPEBENCH_DIST_TIMEOUT='soon' must be a positive number"):
        distributed.timeout_s()
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "90")
    assert distributed.timeout_s() == 90.0
