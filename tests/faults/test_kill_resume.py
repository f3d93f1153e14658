"""Kill a real (tiny) planted run with SIGKILL at each stage, run it again, get the clean run's numbers.

Slow (a few runs of ~20 s each): marked ``faults``, run by ``make faults``, not ``make test``.
The kill lands when a file that only exists during that stage appears in the cache, so
no hook in the library is needed: the process dies exactly as a crashed or preempted job would.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

DRIVER = Path(__file__).with_name("driver.py")
# stage -> glob (under the cache root) of a file that exists once that stage is under way
STAGES = {
    "extraction": "*/meta.json",
    "sae-training": "saes/*/train_state/state.json",
    "after-sae-saved": "saes/*/sae/*",
    "attention-memo": "analyses/*",
}


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}


def _run(cache: Path, results: Path) -> dict:
    done = subprocess.run([sys.executable, str(DRIVER), str(cache), str(results)], env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _kill_when(cache: Path, results: Path, pattern: str) -> bool:
    """Start a run and SIGKILL it as soon as ``pattern`` matches; False if it finished first."""
    proc = subprocess.Popen([sys.executable, str(DRIVER), str(cache), str(results)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if any(cache.glob(pattern)):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    return False


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("clean")
    return _run(root / "cache", root / "results")


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_run_killed_at_each_stage_resumes_to_the_clean_numbers(tmp_path: Path, clean_run: dict,
                                                                  stage: str) -> None:
    cache, results = tmp_path / "cache", tmp_path / "results"
    assert _kill_when(cache, results, STAGES[stage]), f"the run finished before reaching {stage}"
    assert not (results / "planted__batchtopk.json").exists()  # killed before it wrote a result
    resumed = _run(cache, results)
    assert resumed == clean_run  # same machine, same batch shapes: bit-identical, not merely close
    verify = subprocess.run([sys.executable, "-m", "scopebench.cli.main", "cache", "verify", "--cache-dir", str(cache)],
                            env=_env(), capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_two_runs_on_one_cache_at_once_agree_with_a_clean_run(tmp_path: Path, clean_run: dict) -> None:
    cache, results = tmp_path / "cache", tmp_path / "results"
    procs = [subprocess.Popen([sys.executable, str(DRIVER), str(cache), str(results)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [proc.communicate(timeout=900) for proc in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1]) == clean_run
