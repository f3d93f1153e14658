"""Registry entry of a backbone: one record holds everything about a model (timm-style)."""
from __future__ import annotations

import hashlib
import json
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scopebench.backbones.sources import get_source

Provenance = Literal["paper Table 5", "paper Table 4", "paper main text", "model config", "inferred", "design"]


class BackboneSpec(BaseModel):
    """A backbone as the paper uses it.

    ``provenance`` maps each paper-relevant field name to where its value comes from,
    so a reader can tell measured facts from our own choices ("inferred").
    """

    model_config = ConfigDict(frozen=True)

    name: str
    family: str  # models of one family at several sizes (Figure 8 plots a family across its sizes)
    size: str  # "b", "l", "g", "s", "336", ...
    source: str  # a registered backbone source (scopebench.backbones.sources: timm, open_clip, planted, ...)
    model_id: str  # timm model name or open_clip architecture
    pretrained_tag: str | None = None  # timm pretrained tag / open_clip pretrained name
    hf_hub_id: str | None = None  # Hugging Face repo holding the weights
    weights_filename: str = "open_clip_pytorch_model.bin"
    image_size: int
    patch_size: int
    n_prefix: int  # CLS + registers
    depth: int  # number of transformer blocks
    embed_dim: int
    n_heads: int
    layer: int  # 0-based designated block
    tau: Union[float, Literal["auto"]]
    gamma: float | None = None  # fixed CDS threshold when the paper gives it
    has_cls: bool = True
    provenance: dict[str, Provenance] = Field(default_factory=dict)

    @field_validator("source")
    @classmethod
    def _registered_source(cls, value: str) -> str:
        try:
            get_source(value)
        except KeyError as err:
            raise ValueError(err.args[0]) from None  # names the known sources and how to add one
        return value

    @property
    def geometry_id(self) -> str:
        """Short hash of the fields that shape the tokens (model, sizes, depth, width, heads, prefix).

        Weights ids that come from a seed rather than a file (random init, the planted backbone)
        include it, so a test that overrides the geometry never reads another geometry's cache.
        """
        fields = ("model_id", "image_size", "patch_size", "n_prefix", "depth", "embed_dim", "n_heads", "has_cls")
        canonical = json.dumps({name: getattr(self, name) for name in fields}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def is_planted(self) -> bool:
        """A size of the built-in planted backbone: built from a seed, fed synthetic scenes, benched at the planted
        scale and chosen by ``--planted-sizes``."""
        return self.source == "planted"

    @property
    def grid_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.grid_side**2
