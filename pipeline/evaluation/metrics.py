"""Overlap metrics on label maps.

Dice convention (RELIABILITY V6): a class absent from both prediction and ground truth scores 1.0,
absent from the ground truth but predicted scores 0.0, so an aggregate is never NaN.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch


def dice_per_class(prediction: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice of every foreground class between two label maps of the same shape.

    Args:
        prediction: integer label map (any spatial shape).
        truth: integer label map of the same shape.
        num_classes: number of classes including background 0.

    Returns:
        float tensor of length ``num_classes - 1`` (classes 1..num_classes-1).

    Raises:
        ValueError: the shapes differ.
    """
    from monai.metrics import compute_dice

    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != ground truth shape {tuple(truth.shape)}")
    pred = torch.nn.functional.one_hot(prediction.long().flatten(), num_classes).T[None].float()
    true = torch.nn.functional.one_hot(truth.long().flatten(), num_classes).T[None].float()
    return compute_dice(pred, true, include_background=False, ignore_empty=False)[0].float()


def confusion_matrix(prediction: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class."""
    index = truth.long().flatten() * num_classes + prediction.long().flatten()
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def miou_and_pixel_accuracy(confusion: torch.Tensor) -> tuple[float, float]:
    """Mean IoU over the classes present in truth or prediction (background included, as in VOC) and pixel accuracy.

    A class absent from both is left out of the mean; with no pixels at all both values are 1.0 (never NaN).
    """
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = union > 0
    miou = float((true_positive[present] / union[present]).mean()) if present.any() else 1.0
    total = float(confusion.sum())
    return miou, float(true_positive.sum() / total) if total else 1.0


# Conventions for empty masks (documented in the README), so that no aggregate is ever NaN:
#   truth and prediction both empty:  Dice 1, IoU 1, HD95 0 mm, NSD 1;
#   exactly one of them empty:        Dice 0, IoU 0, HD95 = the scan's diagonal in mm (the worst
#                                     possible distance), NSD 0.
METRIC_NAMES = ("dice", "iou", "hd95_mm", "nsd")


def case_metrics(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], labels: dict[int, str], tolerance_mm: float
) -> dict[str, dict[str, float]]:
    """Dice, IoU, 95th-percentile Hausdorff distance and normalised surface Dice of every label in one case.

    Distances use MONAI's ``compute_hausdorff_distance`` / ``compute_surface_dice`` with the scan's
    physical voxel spacing, on the masks cropped to their common bounding box (plus a margin),
    which leaves the surfaces and therefore the distances unchanged.

    Args:
        prediction, truth: integer label maps of the same shape, on the scan's own grid.
        spacing: voxel size (mm) along each array axis.
        labels: ``{value: name}`` of the foreground labels to score.
        tolerance_mm: NSD tolerance.

    Returns:
        ``{name: {"dice", "iou", "hd95_mm", "nsd"}}``, every value finite.

    Raises:
        ValueError: the shapes differ.
    """
    return _scores_of_masks(prediction, truth, spacing, {name: (value,) for value, name in labels.items()}, tolerance_mm)


def region_metrics(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], regions, tolerance_mm: float
) -> dict[str, dict[str, float]]:
    """:func:`case_metrics` of each region (a union of label values, :class:`pipeline.data.labels.Region`): its voxels
    are those holding any of its values, in the prediction and in the ground truth; keyed ``region <name>``."""
    return _scores_of_masks(prediction, truth, spacing, {f"region {r.name}": tuple(r.values) for r in regions}, tolerance_mm)


def _scores_of_masks(
    prediction: np.ndarray, truth: np.ndarray, spacing, values_of: dict[str, tuple[int, ...]], tolerance_mm: float
) -> dict[str, dict[str, float]]:
    """:func:`binary_metrics` of each named set of label values (a voxel is in the mask when it holds any of them), with
    the scan's diagonal as the worst distance. Raises ValueError when the shapes differ."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != ground truth shape {tuple(truth.shape)}")
    diagonal = float(np.linalg.norm(np.asarray(prediction.shape) * np.asarray(spacing)))

    def mask(labels: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
        return labels == values[0] if len(values) == 1 else np.isin(labels, values)

    return {
        name: binary_metrics(mask(prediction, values), mask(truth, values), spacing, tolerance_mm, diagonal)
        for name, values in values_of.items()
    }


def binary_metrics(
    pred: np.ndarray, true: np.ndarray, spacing, tolerance_mm: float, worst_distance_mm: float
) -> dict[str, float]:
    """The four metrics of one binary mask pair, with the empty-mask conventions above."""
    pred_count, true_count = int(pred.sum()), int(true.sum())
    if pred_count == 0 and true_count == 0:
        return {"dice": 1.0, "iou": 1.0, "hd95_mm": 0.0, "nsd": 1.0}
    if pred_count == 0 or true_count == 0:
        return {"dice": 0.0, "iou": 0.0, "hd95_mm": worst_distance_mm, "nsd": 0.0}
    overlap = int(np.logical_and(pred, true).sum())
    box = _common_box(pred | true)
    hd95, nsd = _surface_metrics(pred[box], true[box], spacing, tolerance_mm)
    return {
        "dice": 2.0 * overlap / (pred_count + true_count),
        "iou": overlap / (pred_count + true_count - overlap),
        "hd95_mm": hd95,
        "nsd": nsd,
    }


def _common_box(mask: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(0, hits[0] - margin), hits[-1] + 1 + margin))
    return tuple(box)


def _surface_metrics(pred: np.ndarray, true: np.ndarray, spacing, tolerance_mm: float) -> tuple[float, float]:
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    def one_hot(mask: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(mask))
        return torch.stack([~tensor, tensor])[None].float()

    y_pred, y = one_hot(pred), one_hot(true)
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal use of a deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95, spacing=spacing)
        nsd = compute_surface_dice(y_pred, y, [tolerance_mm], include_background=False, spacing=spacing)
    return float(hd95[0, 0]), float(nsd[0, 0])
