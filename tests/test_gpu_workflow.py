"""The self-hosted GPU workflow: it never runs untrusted code on its own, and every command it runs exists."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from scopebench.plugin.options import BY_FLAG

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = yaml.safe_load((REPO / ".github/workflows/gpu-regression.yml").read_text())


def test_it_runs_only_by_hand_or_on_a_maintainers_label_on_the_gpu_runner() -> None:
    triggers = WORKFLOW[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) == {"workflow_dispatch", "pull_request"}
    assert triggers["pull_request"] == {"types": ["labeled"]}
    job = WORKFLOW["jobs"]["regression"]
    assert job["runs-on"] == ["self-hosted", "gpu"] and "gpu-regression" in job["if"]
    assert {"SCOPEBENCH_WEIGHTS_CONFIG", "SCOPEBENCH_DATA", "SCOPEBENCH_CACHE"} <= set(job["env"])


def test_every_command_it_runs_exists() -> None:
    steps = [step.get("run", "") for step in WORKFLOW["jobs"]["regression"]["steps"]]
    makefile = (REPO / "Makefile").read_text()
    targets = {m.group(1) for m in re.finditer(r"^([a-z-]+):", makefile, re.M)}
    for target in re.findall(r"\bmake ([a-z-]+)", " ".join(steps)):
        assert target in targets, target
    pytest_run = next(s for s in steps if "-m pytest bench" in s)
    for flag in re.findall(r"(--[a-z-]+)", pytest_run):
        assert flag in BY_FLAG or flag in ("--ignore",), f"{flag} is not a scopebench option"
    assert "--baseline" in pytest_run and "--device cuda" in pytest_run
    uploaded = next(s for s in WORKFLOW["jobs"]["regression"]["steps"] if "upload-artifact" in s.get("uses", ""))
    assert "results/" in uploaded["with"]["path"]
