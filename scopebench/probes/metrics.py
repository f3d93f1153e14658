"""Probe metrics and the depth loss, with their conventions stated once.

- top-1 accuracy: fraction of samples whose arg-max logit is the label.
- mIoU: one confusion matrix over the whole evaluation set (pixels whose label is the
  ignore index are dropped); IoU_c = TP / (TP + FP + FN); classes with TP + FP + FN = 0
  (absent from both prediction and ground truth of the whole set) are excluded from the
  mean.  Reported as a fraction in [0, 1], not a percentage.
- RMSE: per image over its valid pixels (ground-truth depth > 0), then averaged over the
  images that have at least one valid pixel (the usual NYUd convention).
- scale-invariant loss (Eigen et al. 2014, eq. 4): per image, with ``g = log pred - log gt``
  over its ``n`` valid pixels, ``mean(g^2) - lam * mean(g)^2``; ``lam = 0.5`` is the value
  Eigen et al. train with.  ``sqrt=True`` gives the square-root variant
  ``sqrt(mean(g^2) - lam * mean(g)^2)`` used by later depth heads.  Averaged over the
  images of the batch that have valid pixels.
"""
from __future__ import annotations

import torch


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``logits [n, C]`` against ``labels [n]``."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [n, C] and labels [n], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if labels.numel() == 0:
        raise ValueError("top-1 accuracy of an empty set is undefined")
    return (logits.argmax(dim=1) == labels).float().mean().item()


def confusion_matrix(
    prediction: torch.Tensor, target: torch.Tensor, n_classes: int, ignore_index: int
) -> torch.Tensor:
    """``[C, C]`` long counts, rows = ground truth, columns = prediction; ignored pixels dropped."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    keep = target != ignore_index
    truth, predicted = _labelled_pixels(prediction, target, keep, n_classes, ignore_index)
    flat = truth * n_classes + predicted
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def image_confusion_matrices(
    prediction: torch.Tensor, target: torch.Tensor, n_classes: int, ignore_index: int
) -> torch.Tensor:
    """``[n, C, C]`` long: the :func:`confusion_matrix` of each of ``n`` label maps ``[n, H, W]``.

    Their sum over images is the confusion matrix of the whole set, so a resample of the
    images (a bootstrap) has its mIoU without another pass over the pixels.
    """
    if prediction.shape != target.shape or prediction.ndim != 3:
        raise ValueError(
            f"expected prediction and target of equal shape [n, H, W], got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    n = target.shape[0]
    keep = target != ignore_index
    truth, predicted = _labelled_pixels(prediction, target, keep, n_classes, ignore_index)
    image = torch.arange(n, device=target.device).reshape(n, 1, 1).expand_as(target)[keep]
    flat = (image * n_classes + truth) * n_classes + predicted
    return torch.bincount(flat, minlength=n * n_classes * n_classes).reshape(n, n_classes, n_classes)


def _labelled_pixels(prediction: torch.Tensor, target: torch.Tensor, keep: torch.Tensor, n_classes: int,
                     ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(truth, prediction)`` of the pixels ``keep`` selects, as long; refuses labels outside ``[0, n_classes)``."""
    truth = target[keep].long()
    if truth.numel() and (int(truth.min()) < 0 or int(truth.max()) >= n_classes):
        raise ValueError(
            f"target labels must lie in [0, {n_classes}) or equal ignore_index={ignore_index}; "
            f"found range [{int(truth.min())}, {int(truth.max())}]"
        )
    return truth, prediction[keep].long()


def miou_from_confusion(confusion: torch.Tensor) -> float:
    """Mean IoU over classes present in prediction or ground truth (see module docstring)."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(dim=0) + confusion.sum(dim=1) - tp
    present = union > 0
    if not bool(present.any()):
        raise ValueError("mIoU is undefined: no labelled pixel in the evaluation set")
    return (tp[present] / union[present]).mean().item()


def miou(prediction: torch.Tensor, target: torch.Tensor, n_classes: int, ignore_index: int) -> float:
    """mIoU of integer label maps ``prediction`` and ``target`` of equal shape."""
    return miou_from_confusion(confusion_matrix(prediction, target, n_classes, ignore_index))


def per_image_rmse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[n]`` RMSE of each image ``[n, H, W]`` over pixels with ``target > 0``; NaN if none."""
    if prediction.shape != target.shape or prediction.ndim != 3:
        raise ValueError(
            f"expected prediction and target of equal shape [n, H, W], got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    valid = (target > 0).float()
    count = valid.sum(dim=(1, 2))
    squared = ((prediction.float() - target.float()) ** 2 * valid).sum(dim=(1, 2))
    return torch.where(count > 0, (squared / count.clamp_min(1)).sqrt(), torch.full_like(count, float("nan")))


def rmse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over images with valid pixels of the per-image RMSE (see module docstring)."""
    values = per_image_rmse(prediction, target)
    values = values[~values.isnan()]
    if values.numel() == 0:
        raise ValueError("RMSE is undefined: no pixel with depth > 0 in the evaluation set")
    return values.mean().item()


def scale_invariant_loss(
    prediction: torch.Tensor, target: torch.Tensor, lam: float = 0.5, sqrt: bool = False
) -> torch.Tensor:
    """Eigen et al. (2014) scale-invariant log loss of ``prediction [n, H, W]`` (> 0) vs ``target``.

    Pixels with ``target <= 0`` are invalid and ignored.  Differentiable in ``prediction``.
    """
    if prediction.shape != target.shape or prediction.ndim != 3:
        raise ValueError(
            f"expected prediction and target of equal shape [n, H, W], got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    valid = target > 0
    count = valid.sum(dim=(1, 2)).to(prediction.dtype)
    has_pixels = count > 0
    if not bool(has_pixels.any()):
        raise ValueError("scale-invariant loss is undefined: no pixel with depth > 0 in the batch")
    safe_target = torch.where(valid, target, torch.ones_like(target)).to(prediction.dtype)
    safe_prediction = torch.where(valid, prediction, torch.ones_like(prediction))
    log_diff = (safe_prediction.log() - safe_target.log()) * valid
    n = count.clamp_min(1)
    mean_sq = (log_diff**2).sum(dim=(1, 2)) / n
    mean = log_diff.sum(dim=(1, 2)) / n
    per_image = mean_sq - lam * mean**2
    if sqrt:
        per_image = per_image.clamp_min(0).add(1e-12).sqrt()
    return per_image[has_pixels].mean()
