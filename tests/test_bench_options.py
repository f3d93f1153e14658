"""The claims suite's own options (--sae, --sae-recipes, --planted-sizes) are checked once, at startup, with the fix
named."""
from __future__ import annotations

from pathlib import Path

import pytest

from scopebench.plugin import bench


class _Config:
    """The two things the option checks read from a pytest config: getoption and the stash."""

    def __init__(self, sae: list[str], recipes: str = "batchtopk,topk", planted_sizes: str = "s") -> None:
        self.options = {"sae": sae, "sae_recipes": recipes, "plots_dir": None, "scale": None,
                        "planted_sizes": planted_sizes}
        self.stash = pytest.Stash()
        self.rootpath = Path(".")

    def getoption(self, name: str):
        return self.options[name]

    def addinivalue_line(self, *_args) -> None:
        pass


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    (tmp_path / "ckpt").mkdir()
    return tmp_path / "ckpt"


@pytest.mark.parametrize(("value", "message"), [
    ("nopath", "--sae 'nopath': expected [BACKBONE/]NAME=PATH, e.g. --sae planted/my-sae="),
    ("planted/mine=", "expected [BACKBONE/]NAME=PATH"),
    ("clip-b-16/mine={ckpt}", "unknown backbone 'clip-b-16'"),
    ("planted/={ckpt}", "the SAE needs a name"),
    ("planted/batchtopk={ckpt}", "'batchtopk' is also a baseline recipe of this run"),
    ("planted/mine={ckpt}/missing", "no checkpoint at"),
])
def test_bad_sae_values_stop_the_run_naming_the_fix(checkpoint: Path, value: str, message: str) -> None:
    with pytest.raises(pytest.UsageError) as err:
        bench.pytest_configure(_Config([value.format(ckpt=checkpoint)]))
    assert message in str(err.value)


def test_unknown_recipe_is_refused_with_the_known_ones() -> None:
    with pytest.raises(pytest.UsageError, match=r"unknown recipe\(s\) \['bogus'\]; known: \['batchtopk'"):
        bench.pytest_configure(_Config([], recipes="batchtopk,bogus"))


def test_a_run_benches_the_planted_sizes_it_names_and_every_real_backbone() -> None:
    default, family = _Config([]), _Config([], planted_sizes="s, b,l")
    for config in (default, family):
        bench.pytest_configure(config)
    assert [bench.is_benched(default, n) for n in ("planted", "planted-b", "planted-l", "dinov2-b")] == \
        [True, False, False, True]
    assert all(bench.is_benched(family, n) for n in ("planted", "planted-b", "planted-l", "dinov2-b"))
    larger = _Config([], planted_sizes="l")
    bench.pytest_configure(larger)
    assert [bench.is_benched(larger, n) for n in ("planted", "planted-b", "planted-l")] == [False, False, True]


@pytest.mark.parametrize(("sizes", "message"), [
    ("s,xl", "--planted-sizes: unknown size(s) xl; the planted family's sizes are s, b, l"),
    (" , ", "--planted-sizes: empty; the planted family's sizes are s, b, l (e.g. --planted-sizes s,b,l)"),
])
def test_planted_sizes_outside_the_family_stop_the_run(sizes: str, message: str) -> None:
    with pytest.raises(pytest.UsageError) as err:
        bench.pytest_configure(_Config([], planted_sizes=sizes))
    assert message in str(err.value)


def test_checkpoints_join_the_recipes_of_the_backbone_they_are_bound_to(checkpoint: Path) -> None:
    config = _Config([f"planted/mine={checkpoint}", f"everywhere={checkpoint}"])
    bench.pytest_configure(config)
    assert bench.sae_variants(config, "planted") == ["batchtopk", "topk", "mine", "everywhere"]
    assert bench.sae_variants(config, "dinov2-b") == ["batchtopk", "topk", "everywhere"]


@pytest.mark.parametrize(("sae", "recipes", "message"), [
    (["planted/-={ckpt}"], "batchtopk", "SAE name '-': the name must start with a letter or a digit"),
    (["planted/my sae={ckpt}"], "batchtopk", "contains ' '"),
    (["planted/ça={ckpt}"], "batchtopk", "contains 'ç'"),
    (["planted/" + "x" * 300 + "={ckpt}"], "batchtopk", "300 characters"),
    ([], "../baselines/batchtopk", "recipe name '../baselines/batchtopk'"),
    (["planted/Mine={ckpt}", "planted/mine={ckpt}"], "batchtopk", "differ only in case"),
    (["planted/mine={ckpt}", "mine={ckpt}"], "batchtopk", "'mine' is given twice"),
    ([], "batchtopk,batchtopk", "'batchtopk' is given twice"),
])
def test_names_breaking_the_rule_stop_the_run_at_startup(checkpoint: Path, sae: list[str], recipes: str,
                                                         message: str) -> None:
    """Each of these used to compute everything and then collide, crash or escape when results were written."""
    with pytest.raises(pytest.UsageError, match="names must be|differ only in case|given twice") as err:
        bench.pytest_configure(_Config([v.format(ckpt=checkpoint) for v in sae], recipes=recipes))
    assert message in str(err.value)


def test_checkpoints_bound_to_different_backbones_may_share_a_name(checkpoint: Path) -> None:
    config = _Config([f"planted/mine={checkpoint}", f"dinov2-b/mine={checkpoint}"])
    bench.pytest_configure(config)
    assert bench.sae_variants(config, "dinov2-b") == ["batchtopk", "topk", "mine"]


def test_a_bad_recipe_stops_the_run_at_startup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not per case after other cases trained for minutes: the file and the field are named before any test."""
    from scopebench.sae import recipe as recipe_module

    for name in ("batchtopk", "topk"):
        (tmp_path / f"{name}.json").write_text((recipe_module.BASELINES_DIR / f"{name}.json").read_text())
    (tmp_path / "topk.json").write_text('{"architecture": "topk", "k": 0}')
    monkeypatch.setattr(recipe_module, "BASELINES_DIR", tmp_path)
    monkeypatch.setattr(bench, "BASELINES_DIR", tmp_path)
    with pytest.raises(pytest.UsageError, match=r"--sae-recipes: 1 of 2 SAE recipes are invalid") as err:
        bench.pytest_configure(_Config([]))
    assert "topk.json" in str(err.value) and "k" in str(err.value)
