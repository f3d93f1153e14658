"""scripts/gpu-check.sh: its argument parsing and its dry run (the CPU-side checks), which installs nothing."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scopebench.emd import grid_w1
from scopebench.emd.workloads import attention_like_maps, emd2_loop
from scopebench.suite.scales import PLANTED_SCALE

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu-check.sh"


def _run(*args: str, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    command = ["bash", str(script), *args] if script.suffix == ".sh" else [sys.executable, str(script), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


def _cuda_test_count() -> int:
    spec = importlib.util.spec_from_file_location("cuda_paths", REPO / "tests" / "test_cuda_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plain = [name for name in vars(module) if name.startswith("test_")]
    return len(plain) - 1 + len(module.FAMILIES)  # the extraction test runs once per family


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-check") / "report.json"
    done = _run("--dry-run", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_dry_run_writes_every_section_from_the_cpu_halves(dry_run: dict) -> None:
    assert dry_run["dry_run"] is True and dry_run["environment"]["device"] == "cpu"
    assert set(dry_run["sections"]) == {"tests", "emd", "loader", "plan"}
    loader = dry_run["sections"]["loader"]["rows"]
    assert [(row["backbone"], row["precision"]) for row in loader] == [("planted", "fp32"), ("planted", "bf16")]
    assert all(row["images"] == 8 and row["images_per_s"] == pytest.approx(8 / row["seconds"]) for row in loader)
    tests = dry_run["sections"]["tests"]
    # every CUDA test ran, with the CPU standing in for the device
    assert tests["exit_code"] == 0 and tests["collected"] == _cuda_test_count()
    assert tests["passed"] == tests["collected"] and tests["failed"] == tests["skipped"] == 0


def test_dry_run_emd_figures_are_those_of_the_maps_it_names(dry_run: dict) -> None:
    cases = dry_run["sections"]["emd"]["cases"]
    assert len(cases) == 2 and len({case["side"] for case in cases}) == 2
    for case in cases:
        assert set(case) >= {"speed_ratio", "mean_relative_error", "max_relative_error", "goal_met", "loop_seconds",
                             "sinkhorn_seconds"}
        a, b = attention_like_maps(np.random.default_rng(0), case["pairs"], case["side"])
        reference = emd2_loop(a, b, case["side"])
        relative = np.abs(grid_w1(a, b, case["side"], method="sinkhorn") - reference) / reference
        # the same solver on the same CPU, batch and maps: the same error, up to float64 summation order
        assert case["mean_relative_error"] == pytest.approx(float(relative.mean()), rel=1e-9)
        assert case["mean_relative_error"] <= 0.01  # Sinkhorn's calibration (scopebench.emd.sinkhorn)
        assert case["speed_ratio"] == pytest.approx(case["loop_seconds"] / case["sinkhorn_seconds"])


def test_dry_run_plan_is_the_planted_default_work(dry_run: dict) -> None:
    plan = dry_run["sections"]["plan"]
    (planted,) = plan["plans"]
    stages = {stage["name"]: stage for stage in planted["stages"]}
    assert planted["backbone"] == "planted" and plan["left_out"] == []
    assert stages["extract train"]["forward_passes"] == PLANTED_SCALE.train_images
    assert stages["extract scc s=1"]["forward_passes"] == 2 * PLANTED_SCALE.cds.images
    # the GPU run fills these; the dry run has the same keys, unset
    assert all(stage["estimate_seconds"] is None for stage in stages.values())


def test_bad_arguments_are_refused_with_the_usage() -> None:
    for args, message in ((["--bogus"], "unknown argument '--bogus'"), (["--budget", "soon"], "whole seconds"),
                          (["--out"], "--out needs a file name")):
        done = _run(*args)
        assert done.returncode == 2 and message in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_the_real_check_without_cuda_says_so() -> None:
    done = _run("--out", os.devnull, script=REPO / "scripts" / "gpu_check.py")
    assert done.returncode == 2 and "no CUDA device" in done.stderr and "--dry-run" in done.stderr
