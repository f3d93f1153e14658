"""Offline weight resolution: explicit path, config file, HF cache layout, and the missing-weights message."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from scopebench.backbones import WeightsNotFound, get_spec, load_backbone
from scopebench.backbones.weights import (CONFIG_ENV, WeightsConfigError, read_config_file, read_state_dict,
                                          resolve_weights, weights_id)

TINY = dict(image_size=32, patch_size=8, depth=3, embed_dim=64, n_heads=4, layer=1)
DEIT_REPO = "timm/deit3_small_patch16_224.fb_in22k_ft_in1k"


pytestmark = pytest.mark.usefixtures("offline_hub")


@pytest.fixture(scope="module")
def source():
    """A tiny random-init DeiT3 (seed 5), its tokens on fixed pixels, and its weights as safetensors."""
    backbone = load_backbone("deit3-s", random_init=True, seed=5, overrides=TINY)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    state = {k: v.contiguous() for k, v in backbone.model.state_dict().items()}
    return backbone.forward_layer(pixels).tokens, pixels, state


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _hf_cache_file(hub: Path, repo: str, filename: str, commit: str = "0123abcd", with_ref: bool = True) -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<commit>/<file>}."""
    repo_dir = hub / f"models--{repo.replace('/', '--')}"
    file = repo_dir / "snapshots" / commit / filename
    file.parent.mkdir(parents=True)
    if with_ref:
        (repo_dir / "refs").mkdir()
        (repo_dir / "refs" / "main").write_text(commit)
    return file


def test_missing_weights_message_names_backbone_file_and_every_remedy():
    with pytest.raises(WeightsNotFound) as info:
        load_backbone("clip-b16")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "'clip-b16'" in message
    assert "timm/vit_base_patch16_clip_224.openai" in message
    assert "open_clip_model.safetensors or open_clip_pytorch_model.bin" in message
    assert "--weights clip-b16=/path/to/open_clip_model.safetensors" in message
    assert CONFIG_ENV in message
    assert "huggingface-cli download timm/vit_base_patch16_clip_224.openai open_clip_model.safetensors" in message


def test_explicit_path_reproduces_source_tokens_and_ids_file_by_sha256(tmp_path, source):
    tokens, pixels, state = source
    path = tmp_path / "deit.safetensors"
    save_file(state, str(path))
    loaded = load_backbone("deit3-s", weights=path, overrides=TINY, seed=99)
    torch.testing.assert_close(loaded.forward_layer(pixels).tokens, tokens, atol=0, rtol=0)
    assert loaded.weights_id == _sha256(path)


def test_weights_map_route_with_full_openclip_checkpoint(tmp_path):
    """A whole-CLIP .bin (vision + text keys, torch.save) loads its visual.* part via weights_only."""
    import open_clip

    source = load_backbone("clip-b16", random_init=True, seed=4, overrides=TINY)
    vision = {"image_size": 32, "patch_size": 8, "layers": 3, "width": 64, "head_width": 16}
    text = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
    clip = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None, vision_cfg=vision, text_cfg=text)
    clip.visual.load_state_dict(source.visual.state_dict())
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(clip.state_dict(), path)
    loaded = load_backbone("clip-b16", weights_map={"clip-b16": path}, overrides=TINY)
    pixels = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded.forward_layer(pixels).tokens, source.forward_layer(pixels).tokens,
                               atol=0, rtol=0)


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_config_file_route_with_relative_path(tmp_path, monkeypatch, source, suffix):
    tokens, pixels, state = source
    (tmp_path / "w").mkdir()
    save_file(state, str(tmp_path / "w" / "deit.safetensors"))
    config = tmp_path / f"weights{suffix}"
    config.write_text(json.dumps({"deit3-s": "w/deit.safetensors"}) if suffix == ".json"
                      else '"deit3-s" = "w/deit.safetensors"\n')
    monkeypatch.setenv(CONFIG_ENV, str(config))
    assert resolve_weights(get_spec("deit3-s")) == tmp_path / "w" / "deit.safetensors"
    torch.testing.assert_close(load_backbone("deit3-s", overrides=TINY).forward_layer(pixels).tokens, tokens,
                               atol=0, rtol=0)


def test_config_file_that_cannot_be_read_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "nope.json"))
    with pytest.raises(WeightsNotFound, match=r"\$SCOPEBENCH_WEIGHTS_CONFIG .*nope.json: no such file; fix the path "
                                              "or unset the variable"):
        resolve_weights(get_spec("deit3-s"))


def test_config_file_that_cannot_be_parsed_names_the_file_and_the_variable(tmp_path, monkeypatch):
    (tmp_path / "w.json").write_text('{"deit3-s": ')
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "w.json"))
    with pytest.raises(ValueError, match=r"\$SCOPEBENCH_WEIGHTS_CONFIG .*w.json: cannot be parsed"):
        resolve_weights(get_spec("deit3-s"))


def test_a_truncated_safetensors_file_is_named(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot read .*empty.safetensors as safetensors .*download complete"):
        read_state_dict(tmp_path / "empty.safetensors")


@pytest.mark.parametrize("with_ref", [True, False], ids=["refs-main", "pinned-snapshot"])
def test_hf_cache_layout_route(tmp_path, monkeypatch, source, with_ref):
    tokens, pixels, state = source
    hub = tmp_path / "hub"
    file = _hf_cache_file(hub, DEIT_REPO, "model.safetensors", with_ref=with_ref)
    save_file(state, str(file))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert resolve_weights(get_spec("deit3-s")) == file
    loaded = load_backbone("deit3-s", overrides=TINY)
    torch.testing.assert_close(loaded.forward_layer(pixels).tokens, tokens, atol=0, rtol=0)
    assert loaded.weights_id == _sha256(file)


def test_precedence_explicit_then_config_then_cache(tmp_path, monkeypatch):
    spec = get_spec("deit3-s")
    explicit, configured = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for file in (explicit, configured):
        file.write_bytes(b"x")
    cached = _hf_cache_file(tmp_path / "hub", DEIT_REPO, "model.safetensors")
    cached.write_bytes(b"x")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_weights(spec) == cached
    (tmp_path / "w.json").write_text(json.dumps({"deit3-s": str(configured)}))
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "w.json"))
    assert resolve_weights(spec) == configured
    assert resolve_weights(spec, weights_map={"deit3-s": explicit}) == explicit
    assert resolve_weights(spec, weights=explicit, weights_map={"deit3-s": configured}) == explicit


def test_explicit_path_that_does_not_exist_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(WeightsNotFound, match=r"deit3-s.*do not exist.*missing\.safetensors"):
        resolve_weights(get_spec("deit3-s"), weights_map={"deit3-s": tmp_path / "missing.safetensors"})


def test_weights_id_follows_file_content(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"first")
    first = weights_id(path)
    assert first == _sha256(path) == weights_id(path)
    path.write_bytes(b"second version")
    assert weights_id(path) == _sha256(path) != first


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "obj": _NotATensor()}, path)
    with pytest.raises(ValueError, match="cannot read .*evil.pt"):
        read_state_dict(path)
    with pytest.raises(ValueError, match="unsupported weight file"):
        read_state_dict(tmp_path / "weights.npz")


def test_weights_for_another_model_are_rejected(tmp_path, source):
    _, _, state = source
    path = tmp_path / "deit.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match="do not fit"):
        load_backbone("deit3-s", weights=path, overrides={**TINY, "embed_dim": 32})
    with pytest.raises(ValueError, match="conflicts"):
        load_backbone("deit3-s", weights=path, random_init=True)


def test_one_config_parser_for_the_variable_and_the_flag(tmp_path, monkeypatch):
    """``read_config_file`` is the only reader (``$SCOPEBENCH_WEIGHTS_CONFIG`` and the plugin's
    ``--weights-config``): suffixes in any case, paths relative to the file, ``~`` expanded, the origin named."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "W.JSON").write_text(json.dumps({"deit3-s": "w/a.safetensors", "clip-b16": "~/b.bin"}))
    assert read_config_file(tmp_path / "W.JSON") == {"deit3-s": tmp_path / "w" / "a.safetensors",
                                                     "clip-b16": tmp_path / "home" / "b.bin"}
    (tmp_path / "w.Toml").write_text('"deit3-s" = "a.safetensors"\n')
    assert read_config_file(tmp_path / "w.Toml", "--weights-config") == {"deit3-s": tmp_path / "a.safetensors"}
    for name, text, problem in [("w.yaml", "deit3-s: a", "a weights config must end in .json or .toml"),
                                ("n.json", '{"deit3-s": 3}', "must map backbone names to file paths"),
                                ("t.toml", "[deit3-s]\npath = 'a'\n", "must map backbone names to file paths"),
                                ("e.json", '{"deit3-s": ""}', "must map backbone names to file paths")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(WeightsConfigError, match=rf"^--weights-config .*{name}: {problem}"):
            read_config_file(tmp_path / name, "--weights-config")
    with pytest.raises(WeightsNotFound, match=r"^--weights-config .*: is a folder; fix the path$"):
        read_config_file(tmp_path, "--weights-config")
