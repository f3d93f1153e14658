"""Extraction, attention EMD and CDS of the planted backbone at a tiny scale, in one process or under torchrun.

``python distributed_driver.py CACHE_DIR OUT.json`` (one process) or
``python -m torch.distributed.run --nproc-per-node 2 distributed_driver.py CACHE_DIR OUT.json`` (gloo, 2 ranks).
Rank 0 writes ``OUT.json`` (rank r ``OUT.json.rank<r>``): the meta.json shard lists (sha256 of every
shard file) of the extracted entries, the attention EMD means and counts, the CDS of a fixed random
SAE, the shards this rank wrote and the errors it saw when another rank failed, so the test can
compare a 2-rank run with a one-process run.  ``SCOPEBENCH_TEST_DIE_AFTER_SHARDS=N`` makes rank 1
SIGKILL itself after writing N shards (a rank dying mid-extraction).
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_sae import ReluSAE  # noqa: E402

from scopebench import distributed  # noqa: E402
from scopebench.analyses.attention_emd.compute import _shift_emd  # noqa: E402
from scopebench.analyses.cds.scores import compute_cds  # noqa: E402
from scopebench.pipeline import cache  # noqa: E402
from scopebench.pipeline.cache import ActivationStore  # noqa: E402
from scopebench.pipeline.extract import extract_scc_tokens, extract_tokens  # noqa: E402
from scopebench.suite.scales import PLANTED_SCALE  # noqa: E402
from scopebench.suite.workbench import Workbench  # noqa: E402

SCALE = PLANTED_SCALE.updated({"reconstruction": {"images": 24}, "cds": {"images": 20, "k": 4},
                               "attention_emd": {"images": 10, "batch_images": 3}, "batch_size": 4})
SHIFT = 2


def _die_after(shards: int) -> None:
    """Rank 1 kills itself (SIGKILL: no cleanup) once it has written ``shards`` shards."""
    original, written = cache.ShardWriter.write_shard, []

    def write_shard(self, index, arrays):
        original(self, index, arrays)
        written.append(index)
        if len(written) >= shards:
            os.kill(os.getpid(), signal.SIGKILL)
    cache.ShardWriter.write_shard = write_shard


def _count_shards() -> dict[str, int]:
    """Shards this rank writes, per entry kind (a ShardWriter per entry of the launch)."""
    original, written = cache.ShardWriter.write_shard, {}

    def write_shard(self, index, arrays):
        original(self, index, arrays)
        kind = json.loads((self._dir / "meta.json").read_text())["key"]["kind"]
        written[kind] = written.get(kind, 0) + 1
    cache.ShardWriter.write_shard = write_shard
    return written


def _errors() -> dict[str, str]:
    """What each rank sees when one rank fails inside ``together`` and when rank 0 fails in ``from_main``."""
    seen = {}
    try:
        with distributed.together("a step that fails on rank 1"):
            if distributed.rank() == 1:
                raise ValueError("boom on rank 1")
    except Exception as err:  # noqa: BLE001 - recorded for the test
        seen["together"] = f"{type(err).__name__}: {err}"

    def fail() -> None:
        raise KeyError("no such thing on rank 0")
    try:
        distributed.from_main(fail, "a step rank 0 fails")
    except Exception as err:  # noqa: BLE001
        seen["from_main"] = f"{type(err).__name__}: {err}"
    return seen


def _entry_digest(entry_dir: Path) -> dict:
    meta = json.loads((entry_dir / "meta.json").read_text())
    return {"shards": meta["shards"], "rows_per_shard": meta["rows_per_shard"], "complete": meta["complete"],
            "sealed": (entry_dir / "seal.json").is_file()}


def run(cache_dir: Path) -> dict:
    distributed.init_from_env()
    die_after = int(os.environ.get("SCOPEBENCH_TEST_DIE_AFTER_SHARDS", "0"))
    if die_after and distributed.rank() == 1:
        _die_after(die_after)
    written = _count_shards()
    store = ActivationStore(cache_dir)
    bench = Workbench(store, device="cpu", progress=False, scales={"planted": SCALE})
    model, data = bench.backbone("planted"), bench.dataset("planted", "eval")
    tokens = extract_tokens(model, data, store, batch_size=4, shard_rows=5, progress=False)
    pair = extract_scc_tokens(model, bench.dataset("planted", "scc"), store, SHIFT, batch_size=4, shard_rows=3,
                              progress=False)
    emd = _shift_emd(bench, "planted", SHIFT, bench.config("attention_emd", "planted"))
    sae = ReluSAE(torch.randn(model.spec.embed_dim, 96, generator=torch.Generator().manual_seed(0)))
    cds = compute_cds(sae, pair.tokens_a, pair.tokens_b, pair.overlap, k=4, batch_size=3, progress=False)
    return {"world_size": distributed.world_size(),
            "entries": {"tokens": _entry_digest(tokens.entry.path), "scc": _entry_digest(pair.entry.path)},
            "attention_emd": emd.model_dump(mode="json"),
            "cds": {"cds": cds.cds.tolist(), "n_images_used": cds.n_images_used.tolist(),
                    "top_images": cds.top_images.tolist()},
            "shards_written": written, "errors": _errors()}


if __name__ == "__main__":
    digest = run(Path(sys.argv[1]))
    out = Path(sys.argv[2])
    Path(out if distributed.is_main() else f"{out}.rank{distributed.rank()}").write_text(json.dumps(digest))
    # an exit with the gloo group still up can abort a rank (SIGABRT, "terminate called without an active
    # exception": gloo's worker threads outlive the interpreter; pytorch/pytorch#190489), as the plugin's
    # session end does
    distributed.leave()
