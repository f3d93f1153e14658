"""Probe metrics against values worked out by hand on tiny arrays."""
from __future__ import annotations

import math

import pytest
import torch

from scopebench.probes.metrics import (
    confusion_matrix,
    image_confusion_matrices,
    miou,
    per_image_rmse,
    rmse,
    scale_invariant_loss,
    top1,
)


def test_top1_counts_argmax_hits() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.0, 5.0]])
    labels = torch.tensor([0, 2, 0, 2])  # argmax is [0, 1, 0, 2]: rows 0, 2, 3 are right
    assert top1(logits, labels) == pytest.approx(0.75)


def test_top1_rejects_misaligned_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        top1(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


# 2x3 label map; 255 is ignored.  The ignored pixel is predicted as class 3, which must
# not make class 3 "present": it is absent from the ground truth and from the prediction
# on labelled pixels, so it is excluded from the mean.
TARGET = torch.tensor([[0, 0, 1], [1, 255, 2]])
PREDICTION = torch.tensor([[0, 1, 1], [1, 3, 0]])


def test_confusion_matrix_by_hand() -> None:
    expected = torch.zeros(4, 4, dtype=torch.long)
    expected[0, 0] = 1  # (0,0)
    expected[0, 1] = 1  # (0,1)
    expected[1, 1] = 2  # (0,2), (1,0)
    expected[2, 0] = 1  # (1,2)
    assert torch.equal(confusion_matrix(PREDICTION, TARGET, n_classes=4, ignore_index=255), expected)


def test_image_confusion_matrices_are_each_maps_own_and_sum_to_the_whole() -> None:
    # image 0 is the hand-worked map above; image 1 is all class 2, predicted 2, 2, 0 / 1, 3, 3 with one ignored pixel
    target = torch.stack([TARGET, torch.tensor([[2, 2, 2], [2, 2, 255]])])
    prediction = torch.stack([PREDICTION, torch.tensor([[2, 2, 0], [1, 3, 3]])])
    per_image = image_confusion_matrices(prediction, target, n_classes=4, ignore_index=255)
    second = torch.zeros(4, 4, dtype=torch.long)
    second[2, 2], second[2, 0], second[2, 1], second[2, 3] = 2, 1, 1, 1
    assert per_image.shape == (2, 4, 4)
    assert torch.equal(per_image[0], confusion_matrix(PREDICTION, TARGET, n_classes=4, ignore_index=255))
    assert torch.equal(per_image[1], second)
    assert torch.equal(per_image.sum(dim=0), confusion_matrix(prediction, target, n_classes=4, ignore_index=255))
    with pytest.raises(ValueError, match="ignore_index"):
        image_confusion_matrices(prediction, target, n_classes=2, ignore_index=255)
    with pytest.raises(ValueError, match=r"\[n, H, W\]"):
        image_confusion_matrices(PREDICTION, TARGET, n_classes=4, ignore_index=255)


def test_miou_by_hand_excludes_absent_class() -> None:
    # class 0: TP 1, FP 1 (pixel (1,2)), FN 1 (pixel (0,1)) -> 1/3
    # class 1: TP 2, FP 1 (pixel (0,1)), FN 0            -> 2/3
    # class 2: TP 0, FP 0, FN 1 (pixel (1,2))            -> 0
    # class 3: absent everywhere (its one prediction is on the ignored pixel) -> excluded
    value = miou(PREDICTION, TARGET, n_classes=4, ignore_index=255)
    assert value == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert value != pytest.approx((1 / 3 + 2 / 3 + 0 + 0) / 4)


def test_miou_counts_class_present_only_in_prediction() -> None:
    prediction = PREDICTION.clone()
    prediction[0, 0] = 3  # class 3 now predicted on a labelled pixel: IoU 0, included
    # class 0: TP 0, FP 1, FN 2 -> 0; class 1: 2/3; class 2: 0; class 3: TP 0, FP 1 -> 0
    assert miou(prediction, TARGET, n_classes=4, ignore_index=255) == pytest.approx((2 / 3) / 4)


def test_miou_rejects_labels_out_of_range() -> None:
    with pytest.raises(ValueError, match="ignore_index"):
        miou(PREDICTION, TARGET, n_classes=2, ignore_index=255)


def test_rmse_per_image_over_valid_pixels() -> None:
    prediction = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 5.0], [5.0, 5.0]], [[2.0, 2.0], [2.0, 2.0]]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]])
    # image 0: valid errors 0, 1, 2 -> sqrt(5/3); image 1: no valid pixel; image 2: 1
    per_image = per_image_rmse(prediction, target)
    assert per_image[0].item() == pytest.approx(math.sqrt(5 / 3))
    assert math.isnan(per_image[1].item())
    assert per_image[2].item() == pytest.approx(1.0)
    assert rmse(prediction, target) == pytest.approx((math.sqrt(5 / 3) + 1) / 2)


def test_rmse_without_valid_pixels_raises() -> None:
    with pytest.raises(ValueError, match="depth > 0"):
        rmse(torch.ones(1, 2, 2), torch.zeros(1, 2, 2))


def test_scale_invariant_loss_by_hand() -> None:
    prediction = torch.tensor([[[2.0, 1.0, 7.0]]])
    target = torch.tensor([[[1.0, 1.0, 0.0]]])  # third pixel invalid
    # g = [log 2, 0]: mean g^2 = (log 2)^2 / 2, mean g = log 2 / 2
    log2 = math.log(2)
    expected = log2**2 / 2 - 0.5 * (log2 / 2) ** 2
    assert scale_invariant_loss(prediction, target).item() == pytest.approx(expected)
    assert scale_invariant_loss(prediction, target, lam=0.5, sqrt=True).item() == pytest.approx(
        math.sqrt(expected), rel=1e-5
    )


def test_scale_invariant_loss_lambda_one_ignores_global_scale() -> None:
    generator = torch.Generator().manual_seed(0)
    prediction = torch.rand(2, 3, 4, generator=generator) + 0.5
    target = torch.rand(2, 3, 4, generator=generator) + 0.5
    base = scale_invariant_loss(prediction, target, lam=1.0)
    rescaled = scale_invariant_loss(prediction * torch.tensor([3.0, 0.2])[:, None, None], target, lam=1.0)
    assert rescaled.item() == pytest.approx(base.item(), rel=1e-5)
    # with lambda < 1 a global scale error is penalised
    assert scale_invariant_loss(prediction * 3, target, lam=0.5) > scale_invariant_loss(prediction, target, lam=0.5)


def test_scale_invariant_loss_averages_images_and_has_finite_gradient() -> None:
    prediction = torch.tensor([[[2.0, 1.0]], [[1.0, 1.0]], [[5.0, 5.0]]], requires_grad=True)
    target = torch.tensor([[[1.0, 1.0]], [[1.0, 1.0]], [[0.0, 0.0]]])  # image 2 has no valid pixel
    log2 = math.log(2)
    first = log2**2 / 2 - 0.5 * (log2 / 2) ** 2
    loss = scale_invariant_loss(prediction, target)
    assert loss.item() == pytest.approx(first / 2)  # mean over the two images with pixels
    loss.backward()
    assert torch.isfinite(prediction.grad).all()
    assert torch.equal(prediction.grad[2], torch.zeros(1, 2))
