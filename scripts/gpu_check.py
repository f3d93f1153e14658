"""The GPU check: every figure of a CUDA machine's run in one JSON (``scripts/gpu-check.sh`` calls this).

Three sections, each timed:

- ``tests``: the test suite's CUDA paths (``tests/test_cuda_paths.py``: extraction of random-init
  shrunken models of each family on cuda vs cpu, SAE training and probes on cuda), run by pytest;
- ``emd``: Sinkhorn EMD on the device against the plain ``ot.emd2`` loop on dense attention-like
  maps (13x13 and 23x23 grids): speed ratio, mean and max relative error, and whether the goal
  (at least 50x at at most 1% mean error) is met;
- ``plan``: ``scopebench plan`` at paper scale for every registry backbone, calibrated on the device,
  with EMD planned on the device (Sinkhorn), while the time budget lasts.

``--dry-run`` writes the same keys from the CPU halves at tiny sizes, in seconds: the CUDA tests
run with the CPU as the device under test (``SCOPEBENCH_CHECK_DEVICE=cpu``), the comparison runs Sinkhorn on the CPU on a few pairs of small grids,
and the plan is the planted default's work without calibration.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CUDA_TESTS = "tests/test_cuda_paths.py"
SINKHORN_GOAL, ERROR_GOAL = 50.0, 0.01
#: (grid side, pairs) of the EMD comparison; the loop takes ~5 ms (13x13) to ~46 ms (23x23) per pair
EMD_CASES = ((13, 2000), (23, 300))
DRY_EMD_CASES = ((5, 24), (7, 24))
#: the plan section stops starting backbones once this much of the budget is spent
PLAN_SHARE = 0.9


class Outcomes:
    """A pytest plugin counting test outcomes (collected, passed, failed, skipped)."""

    def __init__(self) -> None:
        self.counts = {"collected": 0, "passed": 0, "failed": 0, "skipped": 0}
        self.failures: list[str] = []

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        self.counts["collected"] = len(items)

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = report.outcome if report.outcome in ("passed", "skipped") else "failed"
            self.counts[outcome] += 1
            if outcome == "failed":
                self.failures.append(report.nodeid)


def run_tests(dry_run: bool) -> dict[str, Any]:
    import pytest

    args = [str(REPO / CUDA_TESTS), "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO)]
    if dry_run:  # the CPU stands in for the device under test: every line but the transfer runs
        os.environ["SCOPEBENCH_CHECK_DEVICE"] = "cpu"
    outcomes = Outcomes()
    code = pytest.main(args, plugins=[outcomes])
    return {"command": " ".join(["pytest", *args]), "exit_code": int(code), **outcomes.counts,
            "failures": outcomes.failures}


def compare_emd(side: int, pairs: int, device: str) -> dict[str, Any]:
    """Sinkhorn on ``device`` against the ``ot.emd2`` loop on the same dense maps."""
    import numpy as np
    import torch

    from scopebench.emd import grid_w1
    from scopebench.emd.workloads import attention_like_maps, emd2_loop

    a, b = attention_like_maps(np.random.default_rng(0), pairs, side)
    start = time.perf_counter()
    reference = emd2_loop(a, b, side)
    loop_seconds = time.perf_counter() - start
    grid_w1(a[:8], b[:8], side, method="sinkhorn", device=device)  # warm-up: kernels, allocator
    seconds = []
    for _ in range(3):
        start = time.perf_counter()
        result = grid_w1(a, b, side, method="sinkhorn", device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    moving = reference > 0
    relative = np.abs(result[moving] - reference[moving]) / reference[moving]
    ratio = loop_seconds / min(seconds)
    return {"side": side, "pairs": pairs, "device": device, "loop_seconds": loop_seconds,
            "sinkhorn_seconds": min(seconds), "speed_ratio": ratio, "mean_relative_error": float(relative.mean()),
            "max_relative_error": float(relative.max()), "loop_ms_per_pair": 1e3 * loop_seconds / pairs,
            "goal": SINKHORN_GOAL, "goal_met": bool(ratio >= SINKHORN_GOAL and relative.mean() <= ERROR_GOAL)}


def run_loader(dry_run: bool, device: str) -> dict[str, Any]:
    """Extraction images/s with the DataLoader pipeline (ViT-B/16 and ViT-L/14-336, fp32 and bf16) and the GPU's
    utilisation meanwhile (bench/perf/gpu_loader_check.py); the dry run times the planted backbone on the CPU."""
    import torch

    sys.path.insert(0, str(REPO))  # bench/ is the checkout's, not the installed package's
    from bench.perf.gpu_loader_check import BACKBONES, measure
    from scopebench.pipeline.loader import available_cpus

    if dry_run:
        rows = measure(("planted",), images=8, batch_size=4, workers=2, device=torch.device("cpu"))
    else:
        rows = measure(BACKBONES, images=512, batch_size=128, workers=available_cpus(), device=torch.device(device))
    return {"rows": rows}


def run_plans(dry_run: bool, device: str, deadline: float) -> dict[str, Any]:
    from scopebench.backbones.registry import REGISTRY
    from scopebench.suite.plan import make_plan
    from scopebench.suite.scales import SCALES, scale_name_for

    plans, left_out = [], []
    for name in (["planted"] if dry_run else list(REGISTRY)):
        if time.perf_counter() > deadline:
            left_out.append(name)
            continue
        scale = scale_name_for(name)
        sizes = SCALES[scale]
        if not dry_run:
            sizes = sizes.updated({"cds": {"emd_method": "sinkhorn"}, "attention_emd": {"method": "sinkhorn"}})
        plan = make_plan(name, scale, sizes, estimate_rates="none" if dry_run else "all", device=device, progress=False)
        plans.append(plan.to_json())
    return {"emd_method": "exact" if dry_run else "sinkhorn", "plans": plans, "left_out": left_out}


def environment(device: str) -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "cpu_cores": os.cpu_count(), "machine": platform.machine()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU halves at tiny sizes, same JSON keys")
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="the JSON to write")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds the whole check may take")
    args = parser.parse_args(argv)

    import torch

    from scopebench.atomic import write_json_atomic

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: no CUDA device is visible to torch; run with --dry-run for the CPU-side checks",
              file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    started = time.perf_counter()
    report: dict[str, Any] = {"dry_run": args.dry_run, "environment": environment(device), "sections": {}}
    sections = report["sections"]

    def timed(name: str, run) -> None:
        start = time.perf_counter()
        sections[name] = run()
        sections[name]["seconds"] = time.perf_counter() - start
        print(f"gpu-check: {name} done in {sections[name]['seconds']:.1f} s", file=sys.stderr, flush=True)

    timed("tests", lambda: run_tests(args.dry_run))
    cases = DRY_EMD_CASES if args.dry_run else EMD_CASES
    timed("emd", lambda: {"cases": [compare_emd(side, pairs, device) for side, pairs in cases]})
    timed("loader", lambda: run_loader(args.dry_run, device))
    deadline = started + PLAN_SHARE * args.budget
    timed("plan", lambda: run_plans(args.dry_run, device, deadline))
    report["seconds"] = time.perf_counter() - started
    write_json_atomic(args.out, report)
    print(f"gpu-check: wrote {args.out} ({report['seconds']:.0f} s)", file=sys.stderr)
    failed = sections["tests"]["failed"] or sections["tests"]["exit_code"] not in (0, 5)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
