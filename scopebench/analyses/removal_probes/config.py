from __future__ import annotations

from pydantic import Field, field_validator

from scopebench.analyses.base import AnalysisConfig
from scopebench.probes.config import BootstrapConfig, ClassificationConfig, DepthConfig, SegmentationConfig

TASKS = ("cls", "seg", "depth")


class RemovalProbesConfig(AnalysisConfig):
    train_images: int = Field(gt=0, description="probe training images (real data: at most this many, from the "
                                                "task's training split minus its validation part)")
    val_images: int = Field(gt=0, description="probe validation images (best trial); real data: held out of the "
                                              "task's training split")
    test_images: int = Field(gt=0, description="probe test images; real data: the task's evaluation split, whole "
                                               "when it holds no more than this")
    task_images: dict[str, tuple[int, int, int]] = Field(
        default_factory=dict, description="(train, val, test) images of one task (cls / seg / depth) when they "
                                          "differ from the three counts above, e.g. because the task's dataset is "
                                          "small (ADE20K, NYUd) or its pooled features are cheap (cls)")
    dense_target_size: int | None = Field(None, gt=0, description="side of segmentation/depth targets; None = the "
                                                                  "input resolution (paper)")
    propagate: bool = Field(False, description="run edited tokens through the backbone's remaining blocks before "
                                               "probing (default: probe at the SAE layer)")
    classification: ClassificationConfig = ClassificationConfig()
    segmentation: SegmentationConfig = SegmentationConfig(ignore_index=-1)  # ADE20K loader: "other" -> -1
    depth: DepthConfig = DepthConfig()
    bootstrap: BootstrapConfig = Field(BootstrapConfig(), description="the paired bootstrap over test images that "
                                       "gives each removal's classification and segmentation gain an interval")

    @field_validator("task_images")
    @classmethod
    def _known_tasks(cls, value: dict[str, tuple[int, int, int]]) -> dict[str, tuple[int, int, int]]:
        unknown = sorted(set(value) - set(TASKS))
        if unknown:
            raise ValueError(f"task_images: unknown task(s) {unknown}; use {', '.join(TASKS)}")
        if any(n <= 0 for counts in value.values() for n in counts):
            raise ValueError(f"task_images: every (train, val, test) count must be > 0, got {value}")
        return value

    def probe(self, task: str) -> ClassificationConfig | SegmentationConfig | DepthConfig:
        """The probe config of ``task`` (cls / seg / depth)."""
        return {"cls": self.classification, "seg": self.segmentation, "depth": self.depth}[task]

    def images(self, task: str, split: str) -> int:
        """Images of one probe split (``task`` in cls / seg / depth, ``split`` in train / val / test)."""
        counts = self.task_images.get(task, (self.train_images, self.val_images, self.test_images))
        return dict(zip(("train", "val", "test"), counts))[split]
