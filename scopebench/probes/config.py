"""Probe hyperparameters (supplement section C); defaults are the paper's values.

Everything that changes a probe's result lives here so it can be recorded with it;
the device and progress bars are call arguments instead.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ProbeConfig(BaseModel):
    """Training and random-search settings shared by the three probes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(100, ge=1)
    trials: int = Field(5, ge=1, description="random-search trials; the best on validation is kept")
    batch_size: int = Field(ge=1)
    lr_range: tuple[float, float] = Field(description="learning rate, sampled log-uniformly")
    weight_decay_range: tuple[float, float] = (1e-5, 1e-4)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    standardize: bool = Field(
        True,
        description=(
            "z-score each feature dimension with training-set statistics before the linear layer "
            "(a fixed affine map, so the probe stays linear). Not stated in the paper; it makes the "
            "paper's learning-rate ranges usable whatever the backbone's feature scale."
        ),
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check_ranges(self) -> ProbeConfig:
        for name in ("lr_range", "weight_decay_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name}={(low, high)} must satisfy 0 < low <= high (it is sampled log-uniformly)")
        return self


class ClassificationConfig(ProbeConfig):
    batch_size: int = Field(1024, ge=1)
    lr_range: tuple[float, float] = (1e-3, 1e-2)


class SegmentationConfig(ProbeConfig):
    batch_size: int = Field(64, ge=1)
    lr_range: tuple[float, float] = (1e-3, 1e-2)
    ignore_index: int = Field(255, description="label value excluded from the loss and from mIoU")


class DepthConfig(ProbeConfig):
    batch_size: int = Field(8, ge=1)
    lr_range: tuple[float, float] = (1e-1, 1.0)
    n_bins: int = Field(256, ge=2)
    min_depth: float = Field(1e-3, gt=0, description="[min_depth, max_depth] is split into n_bins uniform bins (log needs > 0)")
    max_depth: float = 10.0
    si_lambda: float = Field(0.5, ge=0.0, le=1.0, description="lambda of the scale-invariant loss")
    si_sqrt: bool = Field(False, description="train on sqrt of the scale-invariant loss")

    @model_validator(mode="after")
    def _check_depth_range(self) -> DepthConfig:
        if not self.max_depth > self.min_depth:
            raise ValueError(f"max_depth={self.max_depth} must exceed min_depth={self.min_depth}")
        return self


class BootstrapConfig(BaseModel):
    """The paired bootstrap over test items that puts an interval on a probe score's change
    (:mod:`scopebench.probes.bootstrap`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resamples: int = Field(2000, ge=1, description="bootstrap resamples B of the test items")
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="coverage of the percentile interval")
    seed: int = Field(0, description="seed of the resampled item indices")
