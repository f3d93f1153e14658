"""How much data each bench stage uses: one scale for the planted default, one for real backbones.

SAEBench-style split: a scale is the inputs' sizes (SAE training tokens, batch size) plus one
config per analysis (``scopebench.analyses``); every analysis config is recorded beside the
numbers it produced in the result files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scopebench.analyses import (
    ANALYSES, AnalysisConfig, AttentionEMDConfig, AwCDSConfig, CDSConfig, FeatureMapsConfig, ReconstructionConfig,
    RemovalProbesConfig,
)
from scopebench.probes.config import ClassificationConfig, DepthConfig, SegmentationConfig


class BenchScale(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    train_images: int = Field(gt=0, description="images whose tokens train the SAE (the recipe's tokens_per_image "
                                                "random patches each per epoch)")
    train_patches_per_image: int | None = Field(
        None, gt=0, description="tokens kept per training image at extraction; None = all (paper: 4 random patches)")
    sae_overrides: dict[str, float | int] = Field(
        default_factory=dict, description="recipe fields replaced for this scale (e.g. fewer tokens on the planted default)")
    batch_size: int = Field(32, gt=0, description="images per forward pass at extraction")
    reconstruction: ReconstructionConfig
    cds: CDSConfig
    awcds: AwCDSConfig = AwCDSConfig()
    feature_maps: FeatureMapsConfig = FeatureMapsConfig()
    attention_emd: AttentionEMDConfig
    removal_probes: RemovalProbesConfig

    def analysis(self, name: str) -> AnalysisConfig:
        """The config of analysis ``name`` at this scale."""
        if name not in ANALYSES:
            raise KeyError(f"unknown analysis {name!r}; known: {', '.join(ANALYSES)}")
        return getattr(self, name)

    def updated(self, changes: dict[str, Any]) -> BenchScale:
        """A validated copy with ``changes`` merged in, nested by analysis (``{"cds": {"images": 96}}``)."""
        def merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
            out = dict(base)
            for key, value in new.items():
                out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
                    else value
            return out
        return BenchScale.model_validate(merge(self.model_dump(), changes))


# The embedded default: the planted backbone on synthetic scenes, a few minutes on 2 CPU cores.  The SAEs
# have 2,048 latents (expansion 8 of the planted width 256) and train 488 steps, so the trainer is scaled to
# that: the encoder starts tied to the decoder (BatchTopK's reference initialisation, Bussmann et al. 2024),
# with a learning rate of 1e-2 and a warm-up of 10 steps (2% of the run).  With the recipes' encoder at 0.1x,
# lr 3e-3 and a 100-step warm-up, BatchTopK spread each outlier over ~260 latents on v7 and L0_O was 131
# against L0_A 30 on v8 (README, "Fidelity of the planted default").
PLANTED_SCALE = BenchScale(
    train_images=1200, sae_overrides={"n_tokens": 500_000, "batch_size": 1024, "lr": 1e-2, "lr_warmup_steps": 10,
                                      "encoder_init_scale": 1.0, "expansion_factor": 8},
    batch_size=64,
    reconstruction=ReconstructionConfig(images=256),
    cds=CDSConfig(images=160, k=8),
    attention_emd=AttentionEMDConfig(images=24),
    removal_probes=RemovalProbesConfig(
        # dense maps at the patch grid (14 x 14): the probes' upsampled logits and softmax were most of their time
        # cls: 1,024 test scenes, so that the paired-bootstrap interval of a gain of ~2-3 points (v9) clears zero
        train_images=256, val_images=64, test_images=128, task_images={"cls": (1024, 256, 1024)}, dense_target_size=14,
        # the paper's 100 epochs: at 30 the probe stops before it fits the context, and removing it helps less
        classification=ClassificationConfig(trials=2, batch_size=64),
        segmentation=SegmentationConfig(epochs=6, trials=2, batch_size=32, ignore_index=-1),
        # 6 epochs left the depth probe far from converged (RMSE 1.1 vs 0.6 at 20 epochs)
        depth=DepthConfig(epochs=20, trials=2, batch_size=32, min_depth=0.5, max_depth=12.0)),
)

# Real backbones (a GPU runner): the paper's analysis sizes; probe epochs/trials are the paper's.
# SAEs train on 4 random patch tokens of every ImageNet-1K training image, as in the paper:
# 5.1M tokens, 1,251 steps of the recipes' 4,096-token batches.  Only those 4 tokens per image
# are stored: 16-31 GB in float32 (d 768-1536); all 196-576 would take 49-144x more.
IMAGENET_TRAIN_IMAGES = 1_281_167
PAPER_SCALE = BenchScale(
    train_images=IMAGENET_TRAIN_IMAGES, train_patches_per_image=4, batch_size=32,
    reconstruction=ReconstructionConfig(images=5_000),
    cds=CDSConfig(images=1_000, k=10),
    attention_emd=AttentionEMDConfig(images=1_000),
    # validation is held out of each task's training split; test is its evaluation split:
    # ImageNet val (50,000), ADE20K validation (2,000), NYUd test (654, the labelled split)
    removal_probes=RemovalProbesConfig(train_images=50_000, val_images=10_000, test_images=50_000,
                                       task_images={"seg": (50_000, 1_000, 2_000), "depth": (50_000, 80, 654)}),
)


#: The named scales (``scopebench plan --scale NAME``).
SCALES: dict[str, BenchScale] = {"planted": PLANTED_SCALE, "paper": PAPER_SCALE}


def scale_name_for(backbone: str) -> str:
    """The name in :data:`SCALES` of the scale a bench run of ``backbone`` uses: the planted scale for every
    size of the planted family, the paper's for any other backbone."""
    from scopebench.backbones.registry import REGISTRY  # here: the CLI reads SCALES without importing torch

    spec = REGISTRY.get(backbone)
    return "planted" if spec is not None and spec.is_planted else "paper"


def scale_for(backbone: str) -> BenchScale:
    return SCALES[scale_name_for(backbone)]


class ScaleFileError(ValueError):
    """A ``--scale`` file that cannot be used; the message names the file, the problem and the fix."""


def read_scale_file(path: Path) -> dict[str, BenchScale]:
    """``{"planted": {"cds": {"images": 32}}, ...}`` -> the changed scale of each named backbone.

    Each backbone's changes are merged into its built-in scale (:func:`scale_for`) and validated
    like the built-in ones, so a typo or a bad value is refused before anything runs.
    """
    from scopebench.backbones.registry import REGISTRY  # here: the CLI reads SCALES without importing torch

    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ScaleFileError(f"--scale {path}: cannot read a JSON object ({err})") from None
    if not isinstance(raw, dict):
        raise ScaleFileError(f"--scale {path}: expected a JSON object backbone -> changes, e.g. "
                             '{"planted": {"cds": {"images": 32}}}')
    scales = {}
    for backbone, changes in raw.items():
        if backbone not in REGISTRY:
            raise ScaleFileError(f"--scale {path}: unknown backbone {backbone!r}; known: {', '.join(REGISTRY)}")
        if not isinstance(changes, dict):
            raise ScaleFileError(f"--scale {path}: {backbone}: expected an object of scale fields")
        try:
            scales[backbone] = scale_for(backbone).updated(changes)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise ScaleFileError(f"--scale {path}: {backbone}: {problems} (fields: see scopebench.suite.scales."
                                 "BenchScale and each analysis config)") from None
    return scales
