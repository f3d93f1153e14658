"""Launching tests/distributed_driver.py in one process or under torchrun (2 gloo ranks on CPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DRIVER = Path(__file__).with_name("distributed_driver.py")


def launch_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]),
            **extra}


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]


def driver_command(cache: Path, out: Path, ranks: int) -> list[str]:
    return torchrun(str(DRIVER), str(cache), str(out), nproc=ranks) if ranks > 1 else \
        [sys.executable, str(DRIVER), str(cache), str(out)]


def start_driver(cache: Path, out: Path, *, ranks: int, **env: str) -> subprocess.Popen:
    """Start the driver (``env``: extra environment, e.g. the fault to inject); output is kept for errors."""
    return subprocess.Popen(driver_command(cache, out, ranks), env=launch_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def read_digest(proc: subprocess.Popen, out: Path, ranks: int, timeout: float = 300) -> dict:
    """Wait for a started driver; rank 0's digest, with every other rank's under ``"ranks"``."""
    log, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, log[-6000:]
    digest = json.loads(out.read_text())
    digest["ranks"] = [json.loads(Path(f"{out}.rank{r}").read_text()) for r in range(1, ranks)]
    return digest


def run_driver(cache: Path, out: Path, *, ranks: int, timeout: float = 300) -> dict:
    return read_digest(start_driver(cache, out, ranks=ranks), out, ranks, timeout)
