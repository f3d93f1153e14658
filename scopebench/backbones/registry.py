"""All backbones of the paper plus the planted instrument, one entry each.

Field provenance: "paper Table 5" for layers/tau the supplement states, "paper Table 4"
for CLIP gamma, "model config" for geometry read from timm/open_clip configs, and
"inferred" where the paper is silent and we chose (CLIP layer, DeiT3/SigLIP2 tags).
"""
from __future__ import annotations

from scopebench.backbones.spec import BackboneSpec
from scopebench.paper import paper_gamma

_GEOM = {"image_size": "model config", "patch_size": "model config", "n_prefix": "model config",
         "depth": "model config", "embed_dim": "model config", "n_heads": "model config"}


def _clip(name, size, arch, hf, image, patch, depth, dim, heads):
    return BackboneSpec(
        name=name, family="clip", size=size, source="open_clip", model_id=arch, pretrained_tag="openai",
        hf_hub_id=hf, weights_filename="open_clip_pytorch_model.bin", image_size=image, patch_size=patch,
        n_prefix=1, depth=depth, embed_dim=dim, n_heads=heads, layer=depth - 2, tau="auto", gamma=paper_gamma(name),
        provenance={**_GEOM, "layer": "inferred", "tau": "inferred", "gamma": "paper Table 4",
                    "pretrained_tag": "paper main text"},
    )


def _timm(name, family, size, model_id, tag, image, patch, n_prefix, depth, dim, heads, layer, tau, has_cls=True):
    return BackboneSpec(
        name=name, family=family, size=size, source="timm", model_id=model_id, pretrained_tag=tag,
        hf_hub_id=f"timm/{model_id}.{tag}", weights_filename="model.safetensors", image_size=image,
        patch_size=patch, n_prefix=n_prefix, depth=depth, embed_dim=dim, n_heads=heads, layer=layer, tau=tau,
        has_cls=has_cls,
        provenance={**_GEOM, "layer": "paper Table 5", "tau": "paper Table 5", "pretrained_tag": "inferred"},
    )


def _planted(name, size):
    return BackboneSpec(
        name=name, family="planted", size=size, source="planted", model_id="planted", image_size=112,
        patch_size=8, n_prefix=1, depth=2, embed_dim=256, n_heads=4, layer=1, tau="auto", gamma=None,
        provenance={"image_size": "design", "patch_size": "design", "n_prefix": "design", "depth": "design",
                    "embed_dim": "design", "n_heads": "design", "layer": "design", "tau": "design"},
    )


_ENTRIES = [
    _clip("clip-b16", "b", "ViT-B-16-quickgelu", "timm/vit_base_patch16_clip_224.openai", 224, 16, 12, 768, 12),
    _clip("clip-l14", "l", "ViT-L-14-quickgelu", "timm/vit_large_patch14_clip_224.openai", 224, 14, 24, 1024, 16),
    _clip("clip-l14-336", "l336", "ViT-L-14-336-quickgelu", "timm/vit_large_patch14_clip_336.openai", 336, 14, 24,
          1024, 16),
    _timm("dinov2-b", "dinov2", "b", "vit_base_patch14_dinov2", "lvd142m", 518, 14, 1, 12, 768, 12, 10, 100.0),
    _timm("dinov2-l", "dinov2", "l", "vit_large_patch14_dinov2", "lvd142m", 518, 14, 1, 24, 1024, 16, 22, 100.0),
    _timm("dinov2-g", "dinov2", "g", "vit_giant_patch14_dinov2", "lvd142m", 518, 14, 1, 40, 1536, 24, 39, 150.0),
    _timm("deit3-s", "deit3", "s", "deit3_small_patch16_224", "fb_in22k_ft_in1k", 224, 16, 1, 12, 384, 6, 9, 500.0),
    _timm("deit3-b", "deit3", "b", "deit3_base_patch16_224", "fb_in22k_ft_in1k", 224, 16, 1, 12, 768, 12, 8, 500.0),
    _timm("deit3-l", "deit3", "l", "deit3_large_patch16_224", "fb_in22k_ft_in1k", 224, 16, 1, 24, 1024, 16, 17, 1000.0),
    _timm("siglip2-b", "siglip2", "b", "vit_base_patch16_siglip_224", "v2_webli", 224, 16, 0, 12, 768, 12, 11, 150.0,
          has_cls=False),
    _timm("siglip2-l", "siglip2", "l", "vit_large_patch16_siglip_256", "v2_webli", 256, 16, 0, 24, 1024, 16, 23, 150.0,
          has_cls=False),
    _timm("siglip2-g", "siglip2", "g", "vit_so400m_patch14_siglip_224", "v2_webli", 224, 14, 0, 27, 1152, 16, 26,
          300.0, has_cls=False),
    # the planted family (Figure 8): "planted" is the embedded default; the larger sizes differ from it only in how
    # much class-informative context their tokens carry (scopebench.backbones.planted.SEMANTIC_CONTEXT)
    _planted("planted", "s"),
    _planted("planted-b", "b"),
    _planted("planted-l", "l"),
]

REGISTRY: dict[str, BackboneSpec] = {spec.name: spec for spec in _ENTRIES}
REAL_BACKBONES: tuple[str, ...] = tuple(n for n, spec in REGISTRY.items() if not spec.is_planted)


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a registry entry (a user's own model, from any registered source); bench cases then parametrise it."""
    if spec.name in REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> BackboneSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(REGISTRY)}") from None
