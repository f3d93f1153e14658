"""How much data each bench stage uses: one scale for the planted default, one for real backbones.

SAEBench-style split: this is the *config* of an evaluation; what it measured goes to
the result files.  Every value here is recorded in the results it produced.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scopebench.probes.config import ClassificationConfig, DepthConfig, SegmentationConfig


PROBE_TASKS = ("cls", "seg", "depth")


class BenchScale(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    train_images: int = Field(gt=0, description="images whose tokens train the SAE (the recipe's tokens_per_image "
                                                "random patches each per epoch)")
    train_patches_per_image: int | None = Field(
        None, gt=0, description="tokens kept per training image at extraction; None = all (paper: 4 random patches)")
    sae_overrides: dict[str, float | int] = Field(
        default_factory=dict, description="recipe fields replaced for this scale (e.g. fewer tokens on the planted default)")
    eval_images: int = Field(gt=0, description="images for reconstruction metrics and tau (Table 6)")
    scc_images: int = Field(gt=0, description="images for CDS and awCDS (paper: the same 1,000, one per ImageNet "
                                              "class; Fig. 6, 7)")
    cds_k: int = Field(gt=0, description="top-k images per feature in the CDS average")
    cds_shift: int = Field(1, ge=1, description="SCC shift used for CDS (paper: s = 1)")
    attention_images: int = Field(gt=0, description="images for the attention-EMD analysis (Tables 7, 9)")
    shifts: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    attention_emd_method: str = Field("exact", description="'exact' or 'sinkhorn' (see scopebench.emd)")
    probe_train_images: int = Field(gt=0, description="probe training images (real data: at most this many, "
                                                      "from the task's training split minus its validation part)")
    probe_val_images: int = Field(gt=0, description="probe validation images (best trial); real data: held out "
                                                    "of the task's training split")
    probe_test_images: int = Field(gt=0, description="probe test images; real data: the task's evaluation split, "
                                                     "whole when it holds no more than this")
    task_probe_images: dict[str, tuple[int, int, int]] = Field(
        default_factory=dict, description="(train, val, test) images of one probe task (cls / seg / depth) when "
                                          "they differ from probe_*_images, e.g. because the task's dataset is "
                                          "small (ADE20K, NYUd) or its pooled features are cheap (cls)")
    batch_size: int = Field(32, gt=0, description="images per forward pass")
    dense_target_size: int | None = Field(
        None, gt=0, description="side of segmentation/depth targets; None = the input resolution (paper)")
    classification: ClassificationConfig = ClassificationConfig()
    segmentation: SegmentationConfig = SegmentationConfig(ignore_index=-1)  # ADE20K loader: "other" -> -1
    depth: DepthConfig = DepthConfig()

    @field_validator("task_probe_images")
    @classmethod
    def _known_tasks(cls, value: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
        unknown = sorted(set(value) - set(PROBE_TASKS))
        if unknown:
            raise ValueError(f"task_probe_images: unknown task(s) {unknown}; use {', '.join(PROBE_TASKS)}")
        if any(n <= 0 for counts in value.values() for n in counts):
            raise ValueError(f"task_probe_images: every (train, val, test) count must be > 0, got {value}")
        return value

    def probe_images(self, task: str, split: str) -> int:
        """Images of one probe split (``task`` in cls / seg / depth, ``split`` in train / val / test)."""
        counts = self.task_probe_images.get(task, (self.probe_train_images, self.probe_val_images,
                                                   self.probe_test_images))
        return dict(zip(("train", "val", "test"), counts))[split]


# The embedded default: the planted backbone on synthetic scenes, a few minutes on 2 CPU cores.
PLANTED_SCALE = BenchScale(
    train_images=1200, sae_overrides={"expansion_factor": 8, "n_tokens": 500_000, "batch_size": 1024, "lr": 3e-3},
    eval_images=256, scc_images=160, cds_k=8, attention_images=24,
    probe_train_images=256, probe_val_images=64, probe_test_images=128, task_probe_images={"cls": (1024, 256, 512)},
    batch_size=64, dense_target_size=28,
    classification=ClassificationConfig(epochs=30, trials=2, batch_size=64),
    segmentation=SegmentationConfig(epochs=6, trials=2, batch_size=32, ignore_index=-1),
    # 6 epochs left the depth probe far from converged (RMSE 1.1 vs 0.6 at 20 epochs)
    depth=DepthConfig(epochs=20, trials=2, batch_size=32, min_depth=0.5, max_depth=12.0),
)

# Real backbones (a GPU runner): the paper's analysis sizes; probe epochs/trials are the paper's.
# SAEs train on 4 random patch tokens of every ImageNet-1K training image, as in the paper:
# 5.1M tokens, 1,251 steps of the recipes' 4,096-token batches.  Only those 4 tokens per image
# are stored: 16-31 GB in float32 (d 768-1536); all 196-576 would take 49-144x more.
IMAGENET_TRAIN_IMAGES = 1_281_167
PAPER_SCALE = BenchScale(
    train_images=IMAGENET_TRAIN_IMAGES, train_patches_per_image=4, eval_images=5_000, scc_images=1_000, cds_k=10,
    attention_images=1_000,
    # validation is held out of each task's training split; test is its evaluation split:
    # ImageNet val (50,000), ADE20K validation (2,000), NYUd test (654, the labelled split)
    probe_train_images=50_000, probe_val_images=10_000, probe_test_images=50_000,
    task_probe_images={"seg": (50_000, 1_000, 2_000), "depth": (50_000, 80, 654)}, batch_size=32,
)


def scale_for(backbone: str) -> BenchScale:
    return PLANTED_SCALE if backbone == "planted" else PAPER_SCALE
