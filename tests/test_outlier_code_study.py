"""bench/outlier_code_study.py (``make outlier-study``): which trainer each variant row describes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from scopebench.suite.scales import PLANTED_SCALE

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("outlier_code_study", ROOT / "bench" / "outlier_code_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_variant_extends_the_planted_scales_overrides_and_the_default_row_is_the_planted_default() -> None:
    study = _module()
    assert study.variant_scale(study.VARIANTS["default"]) == PLANTED_SCALE
    fast = study.variant_scale(study.VARIANTS["tied, fast start"]).sae_overrides
    assert fast["n_tokens"] == PLANTED_SCALE.sae_overrides["n_tokens"]  # kept, not replaced
    assert (fast["lr"], fast["lr_warmup_steps"], fast["encoder_init_scale"]) == (1e-2, 10, 1.0)


def test_each_row_names_the_trainer_it_ran_recipe_values_under_the_scales() -> None:
    """The warm-up comes from the recipe (100) unless a variant sets it; lr from the planted scale (3e-3)."""
    study = _module()
    assert study.describe("default", "batchtopk") == "default: encoder 0.1 x decoder, lr 0.003, warm-up 100 steps"
    assert study.describe("fast start", "batchtopk") == "fast start: encoder 0.1 x decoder, lr 0.01, warm-up 10 steps"
