"""The claims suite under ``torchrun --nproc-per-node 2 -m pytest`` (gloo, CPU) on a tiny planted scale.

Every rank runs every case in step (extraction, CDS and attention EMD split over the ranks, the SAE
trained on rank 0); rank 0 alone writes the result files and prints the claims table and the
leaderboard, and its results are a one-process session's.  About a minute: marked ``faults``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributed_launch import launch_env, torchrun  # noqa: E402

pytestmark = pytest.mark.faults

CONFTEST = '''
import pytest
from scopebench.suite.scales import PLANTED_SCALE
from scopebench.suite.workbench import Workbench

TINY = PLANTED_SCALE.updated({
    "train_images": 96, "reconstruction": {"images": 16}, "cds": {"images": 16, "k": 4},
    "attention_emd": {"images": 6, "batch_images": 2}, "batch_size": 8,
    "sae_overrides": {"expansion_factor": 4, "n_tokens": 24_576, "batch_size": 512, "lr": 3e-3,
                      "checkpoint_every": 4, "lr_warmup_steps": 0},
})


@pytest.fixture(scope="session")
def workbench(activation_store):
    return Workbench(activation_store, device="cpu", progress=False, scales={"planted": TINY})
'''

BENCH = '''
def test_reconstruction(workbench, claim_report):
    claim_report.record(workbench.result("reconstruction", "planted", "batchtopk"))


def test_cds(workbench, claim_report):
    claim_report.record(workbench.result("cds", "planted", "batchtopk"))


def test_attention_emd(workbench, claim_report):
    claim_report.record(workbench.result("attention_emd", "planted", shifts=(1,)))
'''


def _session(project: Path, name: str, ranks: int) -> Path:
    results = project / f"results-{name}"
    options = ["-m", "pytest", "-p", "no:cacheprovider", "-q", "--cache-dir", str(project / f"cache-{name}"),
               "--results-dir", str(results), "--sae-recipes", "batchtopk", "--device", "cpu"]
    command = torchrun("--log-dir", str(project / "logs"), "--redirects", "3", *options, nproc=ranks) \
        if ranks > 1 else [sys.executable, *options]
    done = subprocess.run(command, cwd=project, env=launch_env(MPLBACKEND="Agg"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return results


def _numbers(results: Path) -> dict:
    found = {}
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        found[path.name] = {"analyses": {name: entry["output"] for name, entry in record["analyses"].items()},
                            "sae": (record.get("sae") or {}).get("checkpoint_sha256")}
    return found


def test_bench_under_torchrun_writes_one_process_results_from_rank_0(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_tiny_bench.py").write_text(BENCH)
    two = _numbers(_session(tmp_path, "two", ranks=2))
    one = _numbers(_session(tmp_path, "one", ranks=1))
    assert sorted(two) == ["planted.json", "planted__batchtopk.json"]
    assert two["planted__batchtopk.json"]["sae"] == one["planted__batchtopk.json"]["sae"]  # rank 0 trained it
    sae_two, sae_one = (n["planted__batchtopk.json"]["analyses"] for n in (two, one))
    assert sae_two["reconstruction"] == sae_one["reconstruction"]  # every rank computes it alone, as one process
    # CDS: counts exact; gamma is read off CDS values that are float64 sums reduced in another order
    two_cds, one_cds = sae_two["cds"], sae_one["cds"]
    numbers = [k for k, v in one_cds.items() if isinstance(v, float)]
    assert {k: two_cds[k] for k in numbers} == pytest.approx({k: one_cds[k] for k in numbers}, rel=1e-12)
    assert two_cds["no_partition"] == one_cds["no_partition"]
    # the histogram's counts may move only where a CDS sits within rounding of a bin edge: compare totals and edges
    assert sum(sae_two["cds"]["histogram"]["counts"]) == sum(sae_one["cds"]["histogram"]["counts"])
    assert sae_two["cds"]["histogram"]["edges"] == pytest.approx(sae_one["cds"]["histogram"]["edges"], rel=1e-12)
    emd_two, emd_one = (n["planted.json"]["analyses"]["attention_emd"]["per_shift"]["1"] for n in (two, one))
    counts = ("n_outlier", "n_non_outlier")
    assert [emd_two[k] for k in counts] == [emd_one[k] for k in counts]
    # float64 sums of < 2,000 terms in another order: Higham's gamma_n < 1e-12
    assert emd_two == pytest.approx(emd_one, rel=1e-12)
    logs = {rank: (next((tmp_path / "logs").glob(f"*/attempt_0/{rank}/stdout.log"))).read_text() for rank in (0, 1)}
    assert logs[0].count("scopebench: wrote") == 2 and "scopebench leaderboard" in logs[0]
    assert "scopebench: wrote" not in logs[1] and "scopebench leaderboard" not in logs[1]
    assert "scopebench claims" not in logs[1] and "3 passed" in logs[1]
