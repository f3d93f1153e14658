"""The claims suite's part of the plugin (bench/): SAE options checked at startup, case parametrisation,
the workbench.  The options themselves are rows of :data:`scopebench.plugin.options.OPTIONS`.

A bench case runs one analysis and records its output: a test marked
``@pytest.mark.backbones("table7")`` that takes a ``backbone`` argument is parametrised over
the backbones the claims of that paper table cover (planted first, then registry order; of the planted family,
the sizes of ``--planted-sizes``), and,
if it also takes ``sae_name``, over the SAE variants of this run.  Case ids therefore carry the
backbone and the table (``pytest bench -k dinov2``, ``-k table7``).

A case that needs what this machine lacks (weights, a dataset) raises
:class:`~scopebench.suite.workbench.Unavailable`; it is reported as a skip with the message
that says how to provide it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from scopebench.backbones.registry import REGISTRY
from scopebench.claims.registry import backbones_of
from scopebench.names import InvalidName, check_distinct, check_name
from scopebench.plugin.options import PLOTS_SUBDIR, split_name_path
from scopebench.plugin.session import ScopebenchOptions, checked_folder
from scopebench.sae.recipe import BASELINES_DIR, RecipeError, check_recipes
from scopebench.suite.scales import BenchScale, ScaleFileError, read_scale_file
from scopebench.suite.workbench import Unavailable, Workbench

_RECIPES_KEY = pytest.StashKey[list[str]]()
_EXTERNAL_KEY = pytest.StashKey[dict[str, Path]]()
_PLOTS_KEY = pytest.StashKey[Path]()
_SCALES_KEY = pytest.StashKey[dict[str, BenchScale]]()
_PLANTED_SIZES_KEY = pytest.StashKey[frozenset[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backbones(table): parametrise `backbone` over the backbones that the "
                                       "claims of this paper table or figure cover (scopebench.claims.registry)")
    recipes = _checked_recipes(config)
    config.stash[_PLANTED_SIZES_KEY] = _checked_planted_sizes(config)
    config.stash[_RECIPES_KEY] = recipes
    config.stash[_EXTERNAL_KEY] = _checked_external_saes(config, recipes)
    try:
        for backbone in REGISTRY:
            check_distinct(sae_variants(config, backbone), f"--sae / --sae-recipes on {backbone}")
    except InvalidName as err:
        raise pytest.UsageError(str(err)) from None
    scale = config.getoption("scale")
    try:
        config.stash[_SCALES_KEY] = read_scale_file(scale) if scale else {}
    except ScaleFileError as err:
        raise pytest.UsageError(str(err)) from None
    plots = config.getoption("plots_dir")
    config.stash[_PLOTS_KEY] = (checked_folder(plots, "--plots-dir") if plots
                                else Path(config.rootpath) / PLOTS_SUBDIR)


def _checked_recipes(config: pytest.Config) -> list[str]:
    recipes = [r.strip() for r in config.getoption("sae_recipes").split(",") if r.strip()]
    for recipe in recipes:
        _check_name(recipe, "--sae-recipes: recipe name")
    unknown = [r for r in recipes if not (BASELINES_DIR / f"{r}.json").is_file()]
    if unknown:
        known = sorted(p.stem for p in BASELINES_DIR.glob("*.json"))
        raise pytest.UsageError(f"--sae-recipes: unknown recipe(s) {unknown}; known: {known}")
    try:
        check_recipes(recipes)  # every recipe of the run, before any case trains one
    except RecipeError as err:
        raise pytest.UsageError(f"--sae-recipes: {err}") from None
    return recipes


def _checked_planted_sizes(config: pytest.Config) -> frozenset[str]:
    sizes = [s.strip() for s in config.getoption("planted_sizes").split(",") if s.strip()]
    known = [spec.size for spec in REGISTRY.values() if spec.is_planted]
    unknown = [s for s in sizes if s not in known]
    if unknown or not sizes:
        raise pytest.UsageError(f"--planted-sizes: {'unknown size(s) ' + ', '.join(unknown) if unknown else 'empty'}; "
                                f"the planted family's sizes are {', '.join(known)} (e.g. --planted-sizes s,b,l)")
    return frozenset(sizes)


def is_benched(config: pytest.Config, backbone: str) -> bool:
    """Whether this run benches ``backbone``: every real backbone, and the planted sizes of ``--planted-sizes``."""
    spec = REGISTRY[backbone]
    return not spec.is_planted or spec.size in config.stash[_PLANTED_SIZES_KEY]


def _checked_external_saes(config: pytest.Config, recipes: list[str]) -> dict[str, Path]:
    """``--sae [BACKBONE/]NAME=PATH`` values, checked once at startup: form, backbone, path, name clashes."""
    found: dict[str, Path] = {}
    for value in config.getoption("sae"):
        try:
            name, path = split_name_path(value, "--sae", "[BACKBONE/]NAME=PATH", "planted/my-sae=/ckpt")
        except ValueError as err:
            raise pytest.UsageError(str(err)) from None
        backbone, _, sae_name = name.rpartition("/")
        if backbone and backbone not in REGISTRY:
            raise pytest.UsageError(f"--sae {value}: unknown backbone {backbone!r}; known: {', '.join(REGISTRY)}")
        if not sae_name:
            raise pytest.UsageError(f"--sae {value}: the SAE needs a name, e.g. --sae planted/my-sae=PATH")
        _check_name(sae_name, f"--sae {value}: SAE name")
        if sae_name in recipes:
            raise pytest.UsageError(f"--sae {value}: {sae_name!r} is also a baseline recipe of this run; give the "
                                    "checkpoint another name or leave the recipe out of --sae-recipes")
        if not path.exists():
            raise pytest.UsageError(f"--sae {value}: no checkpoint at {path}; give the path of an SAE folder or file")
        found[name] = path
    return found


def _check_name(name: str, what: str) -> None:
    try:
        check_name(name, what)
    except InvalidName as err:
        raise pytest.UsageError(str(err)) from None


def sae_variants(config: pytest.Config, backbone: str) -> list[str]:
    """The SAE names of ``backbone``'s cases: the baseline recipes, then the ``--sae`` checkpoints bound to it."""
    external = [name.split("/", 1)[-1] for name in config.stash[_EXTERNAL_KEY]
                if "/" not in name or name.split("/", 1)[0] == backbone]
    return config.stash[_RECIPES_KEY] + external


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("backbones")
    if marker is not None and "backbone" in metafunc.fixturenames:
        names = sorted((n for n in backbones_of(*marker.args) if is_benched(metafunc.config, n)),
                       key=lambda n: (n != "planted", list(REGISTRY).index(n)))
        if "sae_name" in metafunc.fixturenames:
            cases = [(b, s) for b in names for s in sae_variants(metafunc.config, b)]
            metafunc.parametrize(("backbone", "sae_name"), cases, ids=[f"{b}-{s}" for b, s in cases])
        else:
            metafunc.parametrize("backbone", names, ids=names)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    try:
        return (yield)
    except Unavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def workbench(pytestconfig: pytest.Config, scopebench_options: ScopebenchOptions, activation_store) -> Workbench:
    root = pytestconfig.getoption("data_root")
    return Workbench(activation_store, device=scopebench_options.device, weights_map=scopebench_options.weights,
                     data_root=Path(root) if root else None, external_saes=pytestconfig.stash[_EXTERNAL_KEY],
                     progress=not pytestconfig.getoption("no_progress"),
                     propagate=pytestconfig.getoption("propagate"), seed=pytestconfig.getoption("seed"),
                     scales=pytestconfig.stash[_SCALES_KEY], workers=scopebench_options.workers,
                     precision=scopebench_options.precision)


@pytest.fixture(scope="session")
def plots_dir(pytestconfig: pytest.Config) -> Path:
    path = pytestconfig.stash[_PLOTS_KEY]
    path.mkdir(parents=True, exist_ok=True)
    return path
