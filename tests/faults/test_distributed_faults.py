"""torchrun launches (2 gloo ranks) that lose a rank mid-extraction, or share one cache key with another launch.

Slow (several launches of ~15 s each): marked ``faults``, run by ``make faults``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributed_launch import read_digest, run_driver, start_driver  # noqa: E402

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("clean")
    return run_driver(root / "cache", root / "out.json", ranks=1)


def _entry(cache: Path, kind: str) -> Path:
    for meta in cache.glob("*/meta.json"):
        if json.loads(meta.read_text())["key"]["kind"] == kind:
            return meta.parent
    raise AssertionError(f"no {kind} entry under {cache}")


def test_a_rank_killed_mid_extraction_resumes_to_the_same_entry(tmp_path, clean):
    cache = tmp_path / "cache"
    killed = start_driver(cache, tmp_path / "killed.json", ranks=2, SCOPEBENCH_TEST_DIE_AFTER_SHARDS="1")
    log, _ = killed.communicate(timeout=300)
    assert killed.returncode != 0, log[-3000:]
    entry = _entry(cache, "tokens")
    assert not (entry / "seal.json").exists()  # nothing committed
    left = entry / "shards" / "tokens-00001.npy"  # rank 1's first shard: written, recorded, not yet adopted
    assert (entry / "shards" / "00001.record.json").is_file()
    before = left.stat()
    resumed = run_driver(cache, tmp_path / "resumed.json", ranks=2)
    assert resumed["entries"] == clean["entries"]  # same layout, same bits, complete and sealed
    after = left.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # adopted, not written again
    n_shards = len(clean["entries"]["tokens"]["shards"]) // 3
    rewritten = resumed["shards_written"].get("tokens", 0) + resumed["ranks"][0]["shards_written"].get("tokens", 0)
    assert 1 <= rewritten < n_shards
    # float64 sums of < 6,000 terms in another order: Higham's gamma_n < 1e-12
    assert resumed["attention_emd"] == pytest.approx(clean["attention_emd"], rel=1e-12)


def test_two_launches_on_one_key_write_each_shard_once(tmp_path, clean):
    cache = tmp_path / "cache"
    launches = [start_driver(cache, tmp_path / f"run{i}.json", ranks=2) for i in range(2)]
    digests = [read_digest(proc, tmp_path / f"run{i}.json", 2) for i, proc in enumerate(launches)]
    for digest in digests:
        assert digest["entries"] == clean["entries"]
    for kind, arrays in (("tokens", 3), ("scc-s2", 5)):
        n_shards = len(clean["entries"]["tokens" if kind == "tokens" else "scc"]["shards"]) // arrays
        written = sum(d["shards_written"].get(kind, 0) + d["ranks"][0]["shards_written"].get(kind, 0)
                      for d in digests)
        assert written == n_shards, kind  # the second launch waited for the first and found the entry complete
