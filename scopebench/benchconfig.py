"""How much data each bench stage uses: one scale for the planted default, one for real backbones.

SAEBench-style split: this is the *config* of an evaluation; what it measured goes to
the result files.  Every value here is recorded in the results it produced.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from scopebench.probes.config import ClassificationConfig, DepthConfig, SegmentationConfig


class BenchScale(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    train_images: int = Field(gt=0, description="images whose tokens train the SAE (the recipe's tokens_per_image "
                                                "random patches each per epoch)")
    train_patches_per_image: int | None = Field(
        None, gt=0, description="tokens kept per training image at extraction; None = all (paper: 4 random patches)")
    sae_overrides: dict[str, float | int] = Field(
        default_factory=dict, description="recipe fields replaced for this scale (e.g. fewer tokens on the planted default)")
    eval_images: int = Field(gt=0, description="images for reconstruction metrics, tau and awCDS (Table 6, Fig. 7)")
    scc_images: int = Field(gt=0, description="images for CDS (paper: 1,000, one per ImageNet class)")
    cds_k: int = Field(gt=0, description="top-k images per feature in the CDS average")
    cds_shift: int = Field(1, ge=1, description="SCC shift used for CDS (paper: s = 1)")
    attention_images: int = Field(gt=0, description="images for the attention-EMD analysis (Tables 7, 9)")
    shifts: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    attention_emd_method: str = Field("exact", description="'exact' or 'sinkhorn' (see scopebench.emd)")
    probe_train_images: int = Field(gt=0)
    probe_val_images: int = Field(gt=0)
    probe_test_images: int = Field(gt=0)
    cls_probe_images: tuple[int, int, int] | None = Field(
        None, description="(train, val, test) images of the classification probe when they differ from "
                          "probe_*_images: its pooled features are cheap, and more test images make its "
                          "accuracy less noisy")
    batch_size: int = Field(32, gt=0, description="images per forward pass")
    dense_target_size: int | None = Field(
        None, gt=0, description="side of segmentation/depth targets; None = the input resolution (paper)")
    classification: ClassificationConfig = ClassificationConfig()
    segmentation: SegmentationConfig = SegmentationConfig(ignore_index=-1)  # ADE20K loader: "other" -> -1
    depth: DepthConfig = DepthConfig()

    def probe_images(self, task: str, split: str) -> int:
        """Images of one probe split (``task`` in cls / seg / depth, ``split`` in train / val / test)."""
        counts = (self.probe_train_images, self.probe_val_images, self.probe_test_images)
        if task == "cls" and self.cls_probe_images is not None:
            counts = self.cls_probe_images
        return dict(zip(("train", "val", "test"), counts))[split]


# The embedded default: the planted backbone on synthetic scenes, a few minutes on 2 CPU cores.
PLANTED_SCALE = BenchScale(
    train_images=1200, sae_overrides={"expansion_factor": 8, "n_tokens": 500_000, "batch_size": 1024, "lr": 3e-3},
    eval_images=256, scc_images=160, cds_k=8, attention_images=24,
    probe_train_images=256, probe_val_images=64, probe_test_images=128, cls_probe_images=(1024, 256, 512),
    batch_size=64, dense_target_size=28,
    classification=ClassificationConfig(epochs=30, trials=2, batch_size=64),
    segmentation=SegmentationConfig(epochs=6, trials=2, batch_size=32, ignore_index=-1),
    # 6 epochs left the depth probe far from converged (RMSE 1.1 vs 0.6 at 20 epochs)
    depth=DepthConfig(epochs=20, trials=2, batch_size=32, min_depth=0.5, max_depth=12.0),
)

# Real backbones (a GPU runner): the paper's analysis sizes; probe epochs/trials are the paper's.
# Only 4 patch tokens per training image are stored (the paper's SAE training set): all
# 196-576 of them would take 60-236 GB for 100k images in float32 (30-118 GB in float16).
PAPER_SCALE = BenchScale(
    train_images=100_000, train_patches_per_image=4, eval_images=5_000, scc_images=1_000, cds_k=10,
    attention_images=1_000,
    probe_train_images=50_000, probe_val_images=10_000, probe_test_images=50_000, batch_size=32,
)


def scale_for(backbone: str) -> BenchScale:
    return PLANTED_SCALE if backbone == "planted" else PAPER_SCALE
