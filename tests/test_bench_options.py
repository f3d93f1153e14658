"""The claims suite's own options (--sae, --sae-recipes) are checked once, at startup, with the fix named."""
from __future__ import annotations

from pathlib import Path

import pytest

from scopebench import bench_plugin


class _Config:
    """The two things the option checks read from a pytest config: getoption and the stash."""

    def __init__(self, sae: list[str], recipes: str = "batchtopk,topk") -> None:
        self.options = {"sae": sae, "sae_recipes": recipes}
        self.stash = pytest.Stash()

    def getoption(self, name: str):
        return self.options[name]

    def addinivalue_line(self, *_args) -> None:
        pass


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    (tmp_path / "ckpt").mkdir()
    return tmp_path / "ckpt"


@pytest.mark.parametrize(("value", "message"), [
    ("nopath", "expects [BACKBONE/]NAME=PATH"),
    ("clip-b-16/mine={ckpt}", "unknown backbone 'clip-b-16'"),
    ("planted/={ckpt}", "the SAE needs a name"),
    ("planted/batchtopk={ckpt}", "'batchtopk' is also a baseline recipe of this run"),
    ("planted/mine={ckpt}/missing", "no checkpoint at"),
])
def test_bad_sae_values_stop_the_run_naming_the_fix(checkpoint: Path, value: str, message: str) -> None:
    with pytest.raises(pytest.UsageError) as err:
        bench_plugin.pytest_configure(_Config([value.format(ckpt=checkpoint)]))
    assert message in str(err.value)


def test_unknown_recipe_is_refused_with_the_known_ones() -> None:
    with pytest.raises(pytest.UsageError, match=r"unknown recipe\(s\) \['bogus'\]; known: \['batchtopk'"):
        bench_plugin.pytest_configure(_Config([], recipes="batchtopk,bogus"))


def test_checkpoints_join_the_recipes_of_the_backbone_they_are_bound_to(checkpoint: Path) -> None:
    config = _Config([f"planted/mine={checkpoint}", f"everywhere={checkpoint}"])
    bench_plugin.pytest_configure(config)
    assert bench_plugin.sae_variants(config, "planted") == ["batchtopk", "topk", "mine", "everywhere"]
    assert bench_plugin.sae_variants(config, "dinov2-b") == ["batchtopk", "topk", "everywhere"]
