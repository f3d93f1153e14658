"""scopebench installed as a wheel, not from this checkout: the plugin and the recipes must travel with it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")

#: Top-level entries of the checkout that a wheel build never reads (ignored build outputs, caches, results).
_NOT_BUILT_FROM = {".git", ".venv", "build", "dist", ".pytest_cache", ".benchmarks", ".scopebench-cache",
                   "leaderboard", "tests", "bench"}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_folder_of_the_package_is_listed_in_pyproject():
    """``[tool.setuptools] packages`` is a list (``packages.find`` cannot add ``scopebench.baselines``, the
    top-level baselines/ folder): a folder of scopebench/ left out of it would be missing from the wheel."""
    setuptools = _pyproject()["tool"]["setuptools"]
    found = {".".join(folder.relative_to(REPO).parts) for folder in (REPO / "scopebench").rglob("*")
             if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py"))}
    found |= {"scopebench", "scopebench.baselines"}
    listed = set(setuptools["packages"])
    assert listed == found, (f"pyproject.toml [tool.setuptools] packages: add {sorted(found - listed)}, "
                             f"remove {sorted(listed - found)}")
    assert setuptools["package-dir"] == {"scopebench.baselines": "baselines"}
    assert _pyproject()["project"]["entry-points"]["pytest11"] == {"scopebench.plugin": "scopebench.plugin"}


def _site_packages_without_scopebench(overlay: Path) -> Path:
    """A folder of links to this environment's installed packages, minus scopebench's own (editable) install."""
    overlay.mkdir()
    for site in dict.fromkeys(Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")):
        for entry in site.iterdir():
            lower = entry.name.lower()
            if lower.startswith(("scopebench", "__editable__")) or entry.suffix == ".pth" or \
                    lower == "__pycache__" or (overlay / entry.name).exists():
                continue
            (overlay / entry.name).symlink_to(entry)
    return overlay


CHECK = """
import importlib.metadata as md, json, sys
import scopebench
from scopebench.sae.recipe import BASELINES_DIR, check_recipes
names = sorted(p.stem for p in BASELINES_DIR.glob("*.json"))
check_recipes(names)
dists = [str(d.locate_file("")) for d in md.distributions() if d.metadata["Name"] == "scopebench"]
plugins = [(ep.name, ep.value) for ep in md.entry_points(group="pytest11") if ep.name.startswith("scopebench")]
print(json.dumps({"module": scopebench.__file__, "baselines": str(BASELINES_DIR), "names": names,
                  "dists": dists, "plugins": plugins, "path": sys.path}))
"""


@pytest.mark.slow
def test_wheel_installed_elsewhere_gives_the_plugin_and_the_recipes(tmp_path):
    """Build a wheel, install it into a bare folder T, and run pytest from an unrelated folder.

    How the run is kept from seeing this checkout (the robust part):

    - the wheel is built from a copy of the sources, so a stale ``build/`` of the checkout cannot slip
      old modules into it, and the shared checkout gets no ``build/`` or ``*.egg-info``;
    - ``pip install --target T --no-deps`` (torch & co. are not installed again, 5 GB);
    - the dependencies come from this environment's site-packages through a folder of links that leaves
      out scopebench's editable install (its ``.pth``/finder would map ``scopebench`` back to the checkout,
      and its dist-info would add a second pytest11 entry point that hides a missing one in the wheel);
    - ``python -S`` (no site processing: no ``.pth`` file runs), ``PYTHONPATH=T:links``, a clean
      environment, and cwd in an empty folder (no conftest.py, no pyproject.toml of this repository);
    - then it checks that ``scopebench`` and its recipes are imported from T, that T holds the only
      scopebench distribution, and that pytest lists the plugin's options.
    """
    source, wheels, target = tmp_path / "src", tmp_path / "wheels", tmp_path / "T"
    shutil.copytree(REPO, source, symlinks=True,
                    ignore=lambda folder, names: [n for n in names if n in _NOT_BUILT_FROM and Path(folder) == REPO
                                                  or n == "__pycache__" or n.endswith((".egg-info", ".pyc"))])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST_", "PIP_", "VIRTUAL_ENV"))}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", HF_HUB_OFFLINE="1",
               SCOPEBENCH_CACHE=str(tmp_path / "cache"))
    pip = [sys.executable, "-m", "pip", "--quiet"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(wheels)],
                   check=True, env=env, cwd=tmp_path, timeout=300, capture_output=True)
    (wheel,) = wheels.glob("scopebench-*.whl")
    subprocess.run([*pip, "install", "--target", str(target), "--no-deps", str(wheel)],
                   check=True, env=env, cwd=tmp_path, timeout=300, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_env = {**env, "PYTHONPATH": os.pathsep.join([str(target), str(_site_packages_without_scopebench(
        tmp_path / "links"))])}

    done = subprocess.run([sys.executable, "-S", "-c", CHECK], env=run_env, cwd=elsewhere, timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    assert Path(found["module"]).is_relative_to(target), found["module"]
    assert Path(found["baselines"]) == target / "scopebench" / "baselines"
    assert found["names"] == sorted(p.stem for p in (REPO / "baselines").glob("*.json"))
    assert found["dists"] == [str(target)] and found["plugins"] == [["scopebench.plugin", "scopebench.plugin"]]
    assert not any(str(REPO) in entry for entry in found["path"]), found["path"]

    done = subprocess.run([sys.executable, "-S", "-m", "pytest", "--help", "-p", "no:cacheprovider"], env=run_env,
                          cwd=elsewhere, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    for flag in ("--sae", "--sae-recipes", "--weights", "--weights-config", "--results-dir", "--cache-dir"):
        assert f"  {flag}=" in done.stdout, flag
    assert not (elsewhere / "leaderboard").exists() and not (tmp_path / "cache").exists()


def test_the_environment_imports_this_checkout(tmp_path):
    """An editable install made from another clone would make the console scripts (``scopebench``, ``pytest``)
    run that clone's code while ``python -m pytest`` here runs this one: name it instead of testing the wrong code."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run([sys.executable, "-c", "import scopebench; print(scopebench.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    package = Path(found.stdout.strip()).resolve().parent
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    if package.is_relative_to(site):
        pytest.skip("scopebench is installed as a wheel here (test_wheel_installed_elsewhere covers that)")
    assert package == REPO / "scopebench", (
        f"this environment imports scopebench from {package}, not from this checkout ({REPO}): reinstall it "
        f"here with `{sys.executable} -m pip install -e .` (or delete {Path(sys.executable).parents[1]} and run "
        "`make test`)")
