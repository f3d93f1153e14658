"""Backbone sources are a registry: a user's own model plugs in with one source and one spec, no branch edited."""
from __future__ import annotations

import pytest
import torch

from scopebench.backbones import REGISTRY, BackboneSource, get_source, load_backbone, register_backbone, register_source
from scopebench.backbones.planted import PlantedBackbone
from scopebench.backbones.registry import get_spec
from scopebench.backbones.spec import BackboneSpec
from scopebench.backbones.weights import candidate_filenames


@pytest.fixture
def my_source(monkeypatch: pytest.MonkeyPatch):
    """A toy source whose models are the planted instrument under another name (a stand-in for a user's library)."""
    from scopebench.backbones import registry, sources

    monkeypatch.setattr(sources, "SOURCES", dict(sources.SOURCES))
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    calls = []

    def load(spec, path, seed, device):
        calls.append((spec.name, path, seed, device))
        return PlantedBackbone(spec.model_copy(update={"source": "planted"}), seed=seed)

    register_source(BackboneSource("my-lib", load=load, weight_files=lambda spec: ("weights.pt",),
                                   takes_weights=False, synthetic_scenes=True))
    spec = get_spec("planted").model_copy(update={"name": "my-vit", "family": "my-family", "source": "my-lib"})
    register_backbone(BackboneSpec.model_validate(spec.model_dump()))
    return calls


def test_a_users_own_source_and_backbone_load_through_load_backbone(my_source) -> None:
    model = load_backbone("my-vit", seed=3)
    assert my_source == [("my-vit", None, 3, "cpu")] and model.spec.family == "my-family"
    assert candidate_filenames(get_spec("my-vit")) == ("weights.pt",)
    with pytest.raises(ValueError, match="built from its seed and takes no weight file"):
        load_backbone("my-vit", weights="/x.pt")


def test_the_builtin_sources_say_how_they_differ() -> None:
    assert get_source("planted").synthetic_scenes and not get_source("planted").takes_weights
    assert candidate_filenames(REGISTRY["dinov2-b"]) == ("model.safetensors", "pytorch_model.bin")
    assert candidate_filenames(REGISTRY["clip-b16"]) == ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    tiny = load_backbone("deit3-s", random_init=True, overrides={"depth": 2, "layer": 0, "image_size": 32})
    assert tiny.weights_id.startswith("random-init:0:geometry=")
    assert tiny.forward_layer(torch.zeros(1, 3, 32, 32)).tokens.shape == (1, 4, 384)


def test_unknown_sources_and_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone source 'hf-transformers'; known: timm, open_clip, planted"):
        BackboneSpec.model_validate({**get_spec("planted").model_dump(), "source": "hf-transformers"})
    with pytest.raises(ValueError, match="already registered"):
        register_source(get_source("timm"))
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(get_spec("planted"))
