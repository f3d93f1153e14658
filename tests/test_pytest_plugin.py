"""The pytest plugin's options and fixtures, exercised in isolated inner pytest runs.

The inner runs list no plugin: scopebench's loads by its pytest11 entry point, as in any project that
installed the package."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest_plugins = ["pytester"]

PROBE = """
import os
from pathlib import Path

def test_probe(scopebench_options, activation_store, device):
    payload = {
        "weights": {k: str(v) for k, v in scopebench_options.weights.items()},
        "config": str(scopebench_options.weights_config),
        "cache": str(scopebench_options.cache_dir),
        "store": str(activation_store.root),
        "device": str(device),
        "requested": scopebench_options.device,
        "workers": scopebench_options.workers,
        "precision": scopebench_options.precision,
        "offline": os.environ.get("HF_HUB_OFFLINE"),
    }
    Path("probe.json").write_text(__import__("json").dumps(payload))
"""


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    pytester.makepyfile(test_probe=PROBE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    probe = pytester.path / "probe.json"
    return result, (json.loads(probe.read_text()) if probe.exists() else {})


def test_options_reach_the_fixtures(pytester, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (pytester.path / "models").mkdir()
    dino = pytester.path / "models" / "dino.safetensors"
    clip = pytester.path / "models" / "clip.bin"
    deit = pytester.path / "models" / "deit.safetensors"
    for file in (dino, clip, deit):
        file.write_bytes(b"x")
    config = pytester.path / "weights.json"
    config.write_text(json.dumps({"clip-b16": "models/clip.bin", "dinov2-b": "models/deit.safetensors"}))
    result, probe = _run(pytester, "--weights-config", str(config), "--weights", f"dinov2-b={dino}",
                         "--cache-dir", "acts", "--device", "cpu", "--workers", "0", "--precision", "bf16")
    result.assert_outcomes(passed=1)
    assert probe["weights"] == {"clip-b16": str(clip.resolve()), "dinov2-b": str(dino.resolve())}  # flag wins
    assert probe["config"] == str(config.resolve())
    assert probe["cache"] == probe["store"] == str((pytester.path / "acts").resolve())
    assert probe["device"] == "cpu" and probe["requested"] == "cpu"
    assert probe["workers"] == 0 and probe["precision"] == "bf16"
    assert probe["offline"] == "1"


def test_defaults_follow_the_environment(pytester, monkeypatch):
    monkeypatch.setenv("SCOPEBENCH_CACHE", str(pytester.path / "env-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's explicit choice is kept
    result, probe = _run(pytester)
    result.assert_outcomes(passed=1)
    assert probe["weights"] == {} and probe["config"] == "None" and probe["requested"] == "auto"
    assert probe["workers"] == len(os.sched_getaffinity(0)) and probe["precision"] == "fp32"
    assert probe["cache"] == str(pytester.path / "env-cache")
    assert probe["offline"] == "0"


@pytest.mark.parametrize(("args", "message"), [
    (["--weights", "dinov2-b"], "--weights 'dinov2-b': expected NAME=PATH, e.g. --weights dinov2-b="),
    (["--weights", "dinov2-b="], "expected NAME=PATH"),
    (["--weights", "dinov9=x.pt"], "unknown backbone 'dinov9'; backbones that take weights: clip-b16"),
    (["--weights", "planted=x.pt"], "the planted backbone is built from its seed and takes no weight file"),
    (["--weights", "dinov2-b=missing.safetensors"], "missing.safetensors for 'dinov2-b' does not exist"),
    (["--weights-config", "nope.json"], "nope.json: no such file"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--workers", "-1"], "--workers -1: give 0 (load images in the main process) or more workers"),
    (["--workers", "two"], "invalid int value: 'two'"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
])
def test_bad_options_stop_the_run_with_the_fix(pytester, args, message):
    result, probe = _run(pytester, *args)
    assert result.ret != 0 and probe == {}
    result.stderr.fnmatch_lines([f"*{message}*"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_request_without_cuda_is_refused(pytester):
    result, probe = _run(pytester, "--device", "cuda")
    assert result.ret != 0 and probe == {}
    result.stderr.fnmatch_lines(["*CUDA is not available here; use --device cpu or --device auto*"])


def test_malformed_weights_config_is_named(pytester):
    (pytester.path / "w.json").write_text('["clip-b16"]')
    result, _ = _run(pytester, "--weights-config", "w.json")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*w.json: must map backbone names to file paths (a flat mapping)*got a list*"])


def test_weights_config_with_another_suffix_is_refused(pytester):
    (pytester.path / "w.yaml").write_text("dinov2-b: w.safetensors")
    result, _ = _run(pytester, "--weights-config", "w.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--weights-config *w.yaml: a weights config must end in .json or .toml*"])


def test_weights_config_from_the_environment_is_checked_at_startup(pytester, monkeypatch):
    (pytester.path / "bad.json").write_text('{"dinov2-b": ')
    monkeypatch.setenv("SCOPEBENCH_WEIGHTS_CONFIG", str(pytester.path / "bad.json"))
    result, probe = _run(pytester)
    assert result.ret != 0 and probe == {}
    result.stderr.fnmatch_lines(["*$SCOPEBENCH_WEIGHTS_CONFIG *bad.json: cannot be parsed*"])


def test_home_relative_paths_in_a_weights_config(pytester, monkeypatch):
    home = pytester.path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "w.safetensors").write_bytes(b"x")
    monkeypatch.setenv("HOME", str(home))
    (pytester.path / "w.json").write_text('{"dinov2-b": "~/models/w.safetensors"}')
    result, probe = _run(pytester, "--weights-config", "w.json")
    result.assert_outcomes(passed=1)
    assert probe["weights"] == {"dinov2-b": str(home / "models" / "w.safetensors")}


def test_weights_config_in_toml_with_a_suffix_in_capitals(pytester):
    """The same parser as ``resolve_weights`` (scopebench.backbones.weights.read_config_file): .TOML is TOML."""
    (pytester.path / "w.safetensors").write_bytes(b"x")
    (pytester.path / "W.TOML").write_text('"dinov2-b" = "w.safetensors"\n')
    result, probe = _run(pytester, "--weights-config", "W.TOML")
    result.assert_outcomes(passed=1)
    assert probe["weights"] == {"dinov2-b": str(pytester.path / "w.safetensors")}


def test_options_come_from_the_one_table(pytester):
    """Every row of ``scopebench.plugin.options.OPTIONS`` is a plugin option, with the table's default."""
    from scopebench.plugin.options import OPTIONS

    pytester.makepyfile(test_defaults="""
from scopebench.plugin.options import OPTIONS

def test_defaults(pytestconfig):
    for option in OPTIONS:
        assert pytestconfig.getoption(option.dest) == option.kwargs()["default"], option.flag
""")
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
    help_text = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--help").stdout.str()
    section = help_text[help_text.index("scopebench benchmark:"):].split("\n\n")[0]
    listed = [line.split()[0].split("=")[0] for line in section.splitlines() if line.startswith("  --")]
    assert listed == [o.flag for o in OPTIONS]


PLUGIN_LISTED = 'pytest_plugins = ["scopebench.plugin"]\n'
COUNT_PLUGIN = """
def test_registered_once(request):
    manager = request.config.pluginmanager
    import scopebench.plugin, scopebench.plugin.reporter
    names = [name for name, plugin in manager.list_name_plugin() if plugin is scopebench.plugin]
    assert names == ["scopebench.plugin"], names
    assert manager.get_plugin("scopebench.plugin.reporter") is scopebench.plugin.reporter
    assert request.config.getoption("sae_recipes")
"""


@pytest.mark.parametrize("listed", [[], ["-p", "scopebench.plugin"]], ids=["conftest", "conftest-and-p"])
def test_listing_the_plugin_on_top_of_the_entry_point_registers_it_once(pytester, listed):
    """The entry point is named after the module: a conftest or ``-p`` naming it again is a no-op."""
    pytester.makeconftest(PLUGIN_LISTED)
    pytester.makepyfile(test_count=COUNT_PLUGIN)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *listed)
    result.assert_outcomes(passed=1)


def test_without_autoload_the_plugin_loads_by_name(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_count=COUNT_PLUGIN)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "scopebench.plugin")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--sae-recipes", "topk")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # nothing registered the plugin: its options are unknown


def test_repository_run_without_the_plugin_names_the_fix(tmp_path):
    """This repository's conftest.py lists no plugin; it stops a run that did not get one (stale install,
    autoload disabled) with the fix, instead of failing later on unknown options or fixtures."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "SCOPEBENCH_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", "bench"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "scopebench's pytest plugin is not loaded" in done.stderr and "-p scopebench.plugin" in done.stderr
