"""Real adapters (timm, open_clip) on tiny random-init models, checked against independent full forwards.

Each reference model is built through the library's public API (``timm.create_model`` /
``open_clip.create_model``), given the adapter's weights, and run end to end with hooks;
the adapter must return exactly what those hooks see at the designated block.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from scopebench.backbones import Backbone, LayerOutput, load_backbone

SIZE, PATCH, DEPTH, WIDTH, HEADS, LAYER = 32, 8, 3, 64, 4, 1
TINY = dict(image_size=SIZE, patch_size=PATCH, depth=DEPTH, embed_dim=WIDTH, n_heads=HEADS, layer=LAYER)

CASES = {
    "clip": ("clip-b16", {}, 1),
    "dinov2": ("dinov2-b", {}, 1),
    "dinov2-reg4": ("dinov2-b", {"n_prefix": 5}, 5),
    "deit3": ("deit3-s", {}, 1),
    "siglip2": ("siglip2-b", {}, 0),
}


@dataclass
class Reference:
    """Everything a hook-instrumented full forward pass of an independent copy saw."""

    block_out: torch.Tensor  # [B, P+N, D] output of the designated block
    attn_in: torch.Tensor  # [B, P+N, D] input of the designated block's attention
    attn_out: torch.Tensor  # [B, P+N, D] output of that attention module (before residual)
    final: torch.Tensor  # [B, P+N, D] output of the final norm


def _timm_reference(backbone, pixels: torch.Tensor, edit=None) -> Reference:
    import timm
    from timm.data import resolve_model_data_config

    spec = backbone.spec
    ref = timm.create_model(f"{spec.model_id}.{spec.pretrained_tag}", pretrained=False, img_size=SIZE,
                            patch_size=PATCH, depth=DEPTH, embed_dim=WIDTH, num_heads=HEADS,
                            reg_tokens=spec.n_prefix - int(spec.has_cls)).eval()
    ref.load_state_dict(backbone.model.state_dict())
    cfg = resolve_model_data_config(ref)
    x = (pixels - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    return _run_reference(ref, ref.blocks[LAYER], ref.blocks[LAYER].attn, ref.norm, lambda: ref(x), edit)


def _openclip_reference(backbone, pixels: torch.Tensor, edit=None) -> Reference:
    import open_clip

    vision = {"image_size": SIZE, "patch_size": PATCH, "layers": DEPTH, "width": WIDTH, "head_width": WIDTH // HEADS}
    text = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
    ref = open_clip.create_model(backbone.spec.model_id, pretrained=None, vision_cfg=vision, text_cfg=text).eval()
    ref.visual.load_state_dict(backbone.visual.state_dict())
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    block = ref.visual.transformer.resblocks[LAYER]
    return _run_reference(ref, block, block.attn, ref.visual.ln_post,
                          lambda: ref.encode_image((pixels - mean) / std), edit)


def _run_reference(ref: nn.Module, block: nn.Module, attn: nn.Module, norm: nn.Module, run, edit) -> Reference:
    seen: dict[str, torch.Tensor] = {}

    def on_block(_m, _i, out):
        seen["block_out"] = out.clone()
        return edit(out) if edit is not None else None

    hooks = [
        block.register_forward_hook(on_block),
        attn.register_forward_pre_hook(lambda _m, args: seen.__setitem__("attn_in", args[0].clone())),
        attn.register_forward_hook(
            lambda _m, _i, out: seen.__setitem__("attn_out", (out[0] if isinstance(out, tuple) else out).clone())),
        norm.register_forward_hook(lambda _m, _i, out: seen.__setitem__("final", out.clone())),
    ]
    with torch.no_grad():
        run()
    for hook in hooks:
        hook.remove()
    return Reference(**seen)


def _reference(backbone, pixels, edit=None) -> Reference:
    maker = _openclip_reference if backbone.spec.source == "open_clip" else _timm_reference
    return maker(backbone, pixels, edit)


def _blocks(backbone) -> nn.ModuleList:
    return backbone.visual.transformer.resblocks if backbone.spec.source == "open_clip" else backbone.model.blocks


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def case(request):
    name, extra, n_prefix = CASES[request.param]
    backbone = load_backbone(name, random_init=True, seed=3, overrides={**TINY, **extra})
    pixels = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    out = backbone.forward_layer(pixels, attention=True)
    return backbone, pixels, out, n_prefix, _reference(backbone, pixels)


def test_satisfies_backbone_protocol_and_reports_random_init(case):
    backbone, *_ = case
    assert isinstance(backbone, Backbone)
    assert backbone.weights_id == f"random-init:3:geometry={backbone.spec.geometry_id}"
    for field, value in (("embed_dim", 2 * backbone.spec.embed_dim), ("depth", backbone.spec.depth + 1),
                         ("n_heads", 2 * backbone.spec.n_heads), ("image_size", 2 * backbone.spec.image_size)):
        # so a cache entry of one geometry is never read for another
        assert backbone.spec.model_copy(update={field: value}).geometry_id != backbone.spec.geometry_id
    assert backbone.preprocess.image_size == SIZE


def test_shapes_and_prefix_split(case):
    backbone, _, out, n_prefix, _ = case
    n_patches = (SIZE // PATCH) ** 2
    assert isinstance(out, LayerOutput)
    assert out.tokens.shape == (2, n_patches, WIDTH)
    assert out.prefix.shape == (2, n_prefix, WIDTH)
    assert (out.grid.rows, out.grid.cols, out.grid.patch_size, out.grid.n_prefix) == (4, 4, PATCH, n_prefix)
    assert out.attention.shape == (2, HEADS, n_prefix + n_patches, n_prefix + n_patches)


def test_tokens_equal_hooked_full_forward_at_designated_block(case):
    _, _, out, n_prefix, ref = case
    torch.testing.assert_close(out.prefix, ref.block_out[:, :n_prefix], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.tokens, ref.block_out[:, n_prefix:], atol=1e-5, rtol=1e-5)


def test_attention_rows_are_distributions_that_reproduce_the_block_attention(case):
    backbone, _, out, _, ref = case
    probs = out.attention
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5, rtol=0)
    assert probs.min() >= 0
    b, n_all, d = ref.attn_in.shape
    if backbone.spec.source == "open_clip":
        attn = backbone.visual.transformer.resblocks[LAYER].attn
        # PyTorch's own (non-fused) path returns per-head weights when asked.
        _, expected = attn(ref.attn_in, ref.attn_in, ref.attn_in, need_weights=True, average_attn_weights=False)
        torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
        v = nn.functional.linear(ref.attn_in, attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)[2]
        out_proj = attn.out_proj
    else:
        attn = backbone.model.blocks[LAYER].attn
        v = attn.qkv(ref.attn_in).chunk(3, -1)[2]
        out_proj = attn.proj
    # probabilities @ V, merged and projected, must equal what the reference's (fused) attention returned
    heads = v.reshape(b, n_all, HEADS, d // HEADS).transpose(1, 2)
    mixed = (probs @ heads).transpose(1, 2).reshape(b, n_all, d)
    torch.testing.assert_close(out_proj(mixed), ref.attn_out, atol=1e-5, rtol=1e-4)


def test_later_blocks_never_run(case):
    backbone, pixels, _, _, _ = case
    calls: list[int] = []
    blocks = _blocks(backbone)
    hooks = [blk.register_forward_pre_hook(lambda _m, _a, i=i: calls.append(i)) for i, blk in enumerate(blocks)]
    try:
        backbone.forward_layer(pixels, attention=True)
        backbone.forward_layer(pixels)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == [0, 1, 0, 1]


def test_without_attention_request_gives_same_tokens_and_no_attention(case):
    backbone, pixels, out, _, _ = case
    plain = backbone.forward_layer(pixels)
    assert plain.attention is None
    torch.testing.assert_close(plain.tokens, out.tokens)


def test_propagate_unedited_equals_full_forward_final_norm(case):
    backbone, _, out, n_prefix, ref = case
    final = backbone.propagate(out.tokens, out.prefix)
    torch.testing.assert_close(final, ref.final[:, n_prefix:], atol=1e-5, rtol=1e-5)


def test_propagate_edited_tokens_matches_forward_with_the_edit_hooked_in(case):
    backbone, pixels, out, n_prefix, _ = case
    direction = torch.linspace(-1.0, 1.0, WIDTH)

    def edit(block_out: torch.Tensor) -> torch.Tensor:
        edited = block_out.clone()
        edited[:, n_prefix:] = edited[:, n_prefix:] - 3.0 * direction
        return edited

    ref = _reference(backbone, pixels, edit=edit)
    final = backbone.propagate(out.tokens - 3.0 * direction, out.prefix)
    torch.testing.assert_close(final, ref.final[:, n_prefix:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(final, backbone.propagate(out.tokens, out.prefix), atol=1e-3)


def test_seed_controls_random_init():
    pixels = torch.rand(1, 3, SIZE, SIZE)
    a = load_backbone("deit3-s", random_init=True, seed=1, overrides=TINY).forward_layer(pixels).tokens
    b = load_backbone("deit3-s", random_init=True, seed=1, overrides=TINY).forward_layer(pixels).tokens
    c = load_backbone("deit3-s", random_init=True, seed=2, overrides=TINY).forward_layer(pixels).tokens
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)


def test_bad_pixels_get_clear_errors():
    backbone = load_backbone("deit3-s", random_init=True, overrides=TINY)
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\].*square_resize"):
        backbone.forward_layer(torch.rand(1, 3, 48, 48))
    with pytest.raises(ValueError, match="divide uint8 images by 255"):
        backbone.forward_layer(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"prefix must be \[1, 1, 64\]"):
        backbone.propagate(torch.zeros(1, 16, WIDTH), torch.zeros(1, 0, WIDTH))


def test_bad_overrides_get_clear_errors():
    with pytest.raises(ValueError, match="overridable fields"):
        load_backbone("deit3-s", random_init=True, overrides={"tau": 3.0})
    with pytest.raises(ValueError, match="override 'layer' too"):
        load_backbone("deit3-s", random_init=True, overrides={**TINY, "layer": 9})


def test_planted_is_delegated_with_seed_and_takes_no_weights():
    from scopebench.backbones import get_spec
    from scopebench.backbones.planted import PlantedBackbone

    backbone = load_backbone("planted", seed=2)
    direct = PlantedBackbone(get_spec("planted"), seed=2)
    assert type(backbone) is PlantedBackbone and backbone.weights_id == direct.weights_id
    side = get_spec("planted").image_size
    pixels = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(backbone.forward_layer(pixels).tokens, direct.forward_layer(pixels).tokens)
    with pytest.raises(ValueError, match="takes no weight file"):
        load_backbone("planted", weights="planted.safetensors")
