"""A whole planted run at a tiny scale, as one process the fault suite can kill and restart.

``python driver.py CACHE_DIR RESULTS_DIR`` extracts tokens, trains the BatchTopK baseline,
measures reconstruction, CDS and attention EMD, saves a result file, and prints a JSON
digest of every number, so an interrupted-and-resumed run can be compared with a clean one.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from scopebench.suite.scales import PLANTED_SCALE
from scopebench.pipeline.cache import ActivationStore
from scopebench.results.records import ResultRecord, collect_environment, save_merged
from scopebench.suite.workbench import Workbench

TINY_SCALE = PLANTED_SCALE.updated({
    "train_images": 96, "reconstruction": {"images": 16}, "cds": {"images": 16, "k": 4},
    "attention_emd": {"images": 4}, "batch_size": 8,
    "sae_overrides": {"expansion_factor": 4, "n_tokens": 24_576, "batch_size": 512, "lr": 3e-3,
                      "checkpoint_every": 4, "lr_warmup_steps": 0},
})


def run(cache_dir: Path, results_dir: Path) -> dict:
    bench = Workbench(ActivationStore(cache_dir), device="cpu", progress=False, scales={"planted": TINY_SCALE})
    recon = bench.result("reconstruction", "planted", "batchtopk")
    cds = bench.run("cds", "planted", "batchtopk").details[0].cds
    attention = bench.run("attention_emd", "planted", shifts=(1,)).per_shift[1]
    digest = {
        "recon": recon.output.quantities(),
        "cds_sha256": hashlib.sha256(np.ascontiguousarray(cds, dtype=np.float64).tobytes()).hexdigest(),
        "attention": [attention.outlier, attention.non_outlier, attention.n_outlier],
        "sae_sha256": recon.sae.checkpoint_sha256,
    }
    record = ResultRecord(backbone=recon.backbone, sae=recon.sae, analyses={"reconstruction": recon.record},
                          environment=collect_environment())
    save_merged(record, results_dir)
    return digest


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]), Path(sys.argv[2])), sort_keys=True))
