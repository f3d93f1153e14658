"""One recipe class per SAE architecture, from the registry: each recipe holds the shared training fields and
its own architecture's fields only, the recipe and the checkpoint schema derive from the same fields, and a
new architecture is one module plus ``register``."""
from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pytest
import torch
from pydantic import Field, TypeAdapter

from scopebench.cli.main import main
from scopebench.sae import build_sae, load_sae, save_sae, train_sae
from scopebench.sae.arch import ARCHITECTURES, ArchitectureConfig, CheckpointConfig, SAERecipeBase, recipe_union, register
from scopebench.sae.arch.relu import ReLUConfig
from scopebench.sae.arch.topk import TopKRecipe
from scopebench.sae.dictionary import DictionarySAE
from scopebench.sae.recipe import BASELINES_DIR, RecipeError, SAERecipe, load_recipe, parse_recipe
from scopebench.sae.validation import ConfigFloat

pytestmark = pytest.mark.usefixtures("one_thread")

BASELINES = sorted(path.stem for path in BASELINES_DIR.glob("*.json"))
SHARED = set(SAERecipeBase.model_fields)


def test_every_baseline_holds_only_shared_fields_and_its_own_architectures():
    assert len(BASELINES) >= 5
    for name in BASELINES:
        raw = json.loads((BASELINES_DIR / f"{name}.json").read_text())
        entry = ARCHITECTURES[raw["architecture"]]
        assert set(raw) <= SHARED | set(entry.fields), (name, set(raw) - SHARED - set(entry.fields))
        recipe = load_recipe(name)
        assert type(recipe) is entry.recipe and recipe.architecture == raw["architecture"]
        assert recipe.model_dump(include=set(raw)) == {k: tuple(v) if k == "adam_betas" else v for k, v in raw.items()}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_sae_config_holds_no_field_of_another_architecture(name):
    config = parse_recipe({"architecture": name}).sae_config(8)
    own = set(ARCHITECTURES[name].fields)
    others = {field for entry in ARCHITECTURES.values() for field in entry.fields} - own
    assert not set(config) & others
    assert set(config) == SHARED | own


def test_a_topk_recipe_records_no_jumprelu_relu_or_matryoshka_fields():
    config = load_recipe("topk").sae_config(768)
    for field in ("bandwidth", "l1_coeff", "init_threshold", "sparsity_coeff", "group_fractions", "group_weights",
                  "calibration_batches"):
        assert field not in config
    assert (config["k"], config["aux_k"], config["d_sae"]) == (30, 512, 768 * 32)


def test_recipe_union_discriminates_on_architecture_like_parse_recipe():
    adapter = TypeAdapter(SAERecipe)
    for name in BASELINES:
        raw = json.loads((BASELINES_DIR / f"{name}.json").read_text())
        via_union = adapter.validate_python(raw)
        assert type(via_union) is type(parse_recipe(raw)) and via_union == parse_recipe(raw)
    mapping = adapter.json_schema()["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_recipe_and_checkpoint_schema_derive_from_the_architectures_one_config(name):
    entry = ARCHITECTURES[name]
    assert entry.sae.config_schema is entry.config and entry.sae.architecture == name
    assert issubclass(entry.recipe, entry.config) and issubclass(entry.recipe, SAERecipeBase)
    assert issubclass(entry.checkpoint_schema, entry.config) and issubclass(entry.checkpoint_schema, CheckpointConfig)
    for field in entry.fields:  # same default, range and description in both
        declared = entry.config.model_fields[field]
        for derived in (entry.recipe, entry.checkpoint_schema):
            info = derived.model_fields[field]
            assert (info.get_default(call_default_factory=True), info.metadata, info.description) == \
                (declared.get_default(call_default_factory=True), declared.metadata, declared.description)


def test_sae_hyperparameter_defaults_come_from_the_architecture_config():
    sae = build_sae({"architecture": "relu", "d_in": 4, "d_sae": 8})
    assert sae.setting("l1_coeff") == ReLUConfig.model_fields["l1_coeff"].default == 1.0
    assert build_sae({"architecture": "relu", "d_in": 4, "d_sae": 8, "l1_coeff": 0.25}).setting("l1_coeff") == 0.25
    assert build_sae({"architecture": "matryoshka", "d_in": 4, "d_sae": 32, "k": 2}).prefix_sizes == [2, 4, 8, 16, 32]


def test_a_field_of_another_architecture_is_refused_and_its_owner_named():
    with pytest.raises(RecipeError, match=r"  - l1_coeff: unknown field for a topk recipe \(got 0\.5\); it is a field "
                                          r"of relu recipes$"):
        parse_recipe({"architecture": "topk", "l1_coeff": 0.5})
    with pytest.raises(RecipeError, match=r"  - k: unknown field for a relu recipe \(got 8\); it is a field of topk, "
                                          r"batchtopk, matryoshka recipes$"):
        parse_recipe({"architecture": "relu", "k": 8})
    with pytest.raises(RecipeError, match=r"  - l1_coef: unknown field \(got 0\.5\); did you mean 'l1_coeff'\?"):
        parse_recipe({"architecture": "relu", "l1_coef": 0.5})  # a typo of its own field
    with pytest.raises(RecipeError, match=r"architecture: unknown SAE architecture 'gated'; expected one of "
                                          r"\['batchtopk', 'jumprelu', 'matryoshka', 'relu', 'topk'\]"):
        parse_recipe({"architecture": "gated"})
    with pytest.raises(RecipeError, match=r"architecture: missing; expected one of"):
        parse_recipe({"k": 8})


def test_checkpoints_written_with_the_old_flat_recipe_still_load(tmp_path):
    """Before the per-architecture recipes every config.json recorded every architecture's fields."""
    sae = build_sae({"architecture": "topk", "d_in": 6, "d_sae": 12, "k": 3})
    folder = save_sae(sae, tmp_path / "old")
    flat = {**sae.config, "bandwidth": 0.05, "l1_coeff": 1.0, "init_threshold": 0.1, "sparsity_coeff": 1e-3,
            "group_fractions": [0.0625, 0.125, 0.25, 0.5, 1.0], "group_weights": None, "calibration_batches": 20,
            "lr": 3e-4, "adam_betas": [0.9, 0.999]}
    (folder / "config.json").write_text(json.dumps(flat))
    loaded = load_sae(folder)
    assert loaded.k == 3 and loaded.config["bandwidth"] == 0.05  # unread keys are kept, as recorded


def test_a_topk_recipe_may_leave_k_to_its_default_but_a_checkpoint_may_not():
    assert TopKRecipe().k == 30
    with pytest.raises(ValueError, match=r"k: missing; expected an integer in \[1, d_sae\]"):
        build_sae({"architecture": "topk", "d_in": 4, "d_sae": 8})


# --- a new architecture: one module like this, then register(); everything else follows from the registry


class ShrinkConfig(ArchitectureConfig):
    architecture: Literal["test-shrink"] = "test-shrink"
    shrink: ConfigFloat = Field(0.5, ge=0, description="a finite number >= 0: subtracted before the ReLU")


class ShrinkSAE(DictionarySAE):
    """Soft-thresholded ReLU codes, trained on reconstruction alone."""

    config_schema = ShrinkConfig

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_activations(x) - float(self.setting("shrink")))

    def training_loss(self, x, dead):
        codes = self.encode(x)
        recon = self.batch_fvu(x, self.decode(codes))
        return recon, {"loss": recon.item(), "fvu": recon.item()}, (codes > 0).any(dim=0)


@pytest.fixture
def shrink_registered():
    before = dict(ARCHITECTURES)
    try:
        yield register(ShrinkSAE)
    finally:
        ARCHITECTURES.clear()
        ARCHITECTURES.update(before)


def test_a_new_architecture_is_one_module_and_its_registration(shrink_registered, tmp_path, capsys):
    recipe_class = shrink_registered
    assert recipe_class.__name__ == "ShrinkRecipe" and ARCHITECTURES["test-shrink"].fields == ("shrink",)
    recipe = parse_recipe({"architecture": "test-shrink", "shrink": 0.2, "d_sae": 16, "batch_size": 64,
                           "n_tokens": 256})
    assert type(recipe) is recipe_class
    assert type(TypeAdapter(recipe_union()).validate_python(recipe.model_dump())) is recipe_class
    with pytest.raises(RecipeError, match=r"shrink: Input should be greater than or equal to 0 .*expected a finite "
                                          r"number >= 0"):
        parse_recipe({"architecture": "test-shrink", "shrink": -1})
    tokens = np.random.default_rng(0).normal(size=(32, 8, 6)).astype(np.float32)
    sae = train_sae(recipe, tokens, seed=0, progress=False).sae
    assert type(sae) is ShrinkSAE and sae.config["shrink"] == 0.2 and "k" not in sae.config
    loaded = load_sae(save_sae(sae, tmp_path / "ckpt"))
    assert type(loaded) is ShrinkSAE
    x = torch.from_numpy(tokens[0])
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    (tmp_path / "mine.json").write_text(json.dumps({"architecture": "test-shrink", "shrink": 0.2}))
    assert main(["recipes", "--baselines-dir", str(tmp_path)]) == 0
    assert "shrink=0.2" in capsys.readouterr().out


def test_registration_refuses_a_config_without_its_own_name_or_redeclaring_shared_fields():
    class Unnamed(ArchitectureConfig):
        pass

    class UnnamedSAE(ShrinkSAE):
        config_schema = Unnamed

    with pytest.raises(TypeError, match=r"must declare architecture: Literal\['<name>'\]"):
        register(UnnamedSAE)

    class Clash(ArchitectureConfig):
        architecture: Literal["test-clash"] = "test-clash"
        lr: float = 1.0

    class ClashSAE(ShrinkSAE):
        config_schema = Clash

    with pytest.raises(TypeError, match=r"Clash\.lr redeclares a field every recipe / checkpoint shares"):
        register(ClashSAE)
    assert "test-clash" not in ARCHITECTURES


def test_registering_a_taken_name_for_another_class_is_refused():
    class Impostor(DictionarySAE):
        config_schema = ARCHITECTURES["relu"].config

    with pytest.raises(ValueError, match="'relu' is already registered by ReLUSAE"):
        register(Impostor)

