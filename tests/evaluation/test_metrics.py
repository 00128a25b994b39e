"""Dice per class, and Dice / IoU / HD95 / NSD per case, with the documented empty-mask conventions (V6): never NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.evaluation.metrics import case_metrics, dice_per_class, region_metrics


def test_dice_values_and_empty_mask_convention():
    truth = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 0]])
    pred = torch.tensor([[0, 1, 1, 0], [2, 0, 0, 0]])
    dice = dice_per_class(pred, truth, 4)
    assert dice[0].item() == pytest.approx(2 * 2 / (2 + 3))  # class 1
    assert dice[1].item() == 0.0  # class 2 predicted in the wrong place
    assert dice[2].item() == 1.0  # class 3 absent from both: 1 by convention
    empty_truth = dice_per_class(torch.tensor([1, 0]), torch.tensor([0, 0]), 2)
    assert empty_truth.tolist() == [0.0] and not torch.isnan(dice).any()


def test_shape_mismatch_is_an_error_naming_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        dice_per_class(torch.zeros(2, 3), torch.zeros(3, 2), 2)


def _cube(shape, start, size):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[tuple(slice(s, s + size) for s in start)] = 1
    return mask


def test_case_metrics_on_shifted_cubes_with_anisotropic_spacing():
    truth = _cube((30, 30, 20), (10, 10, 5), 10)
    pred = _cube((30, 30, 20), (10, 10, 6), 10)  # one slice further along z
    scores = case_metrics(pred, truth, (0.8, 0.8, 3.0), {1: "liver"}, tolerance_mm=1.0)["liver"]
    assert scores["dice"] == pytest.approx(2 * 900 / 2000)
    assert scores["iou"] == pytest.approx(900 / 1100)
    assert scores["hd95_mm"] == pytest.approx(3.0)  # the z faces moved by one 3 mm slice
    # surfaces within 1 mm: the 4 side faces; the two z faces (each 10x10 voxels of 0.8 mm) are 3 mm away
    assert 0.5 < scores["nsd"] < 0.9
    assert case_metrics(pred, truth, (0.8, 0.8, 3.0), {1: "liver"}, tolerance_mm=3.5)["liver"]["nsd"] == pytest.approx(1.0)


def test_case_metrics_empty_mask_conventions_are_finite():
    shape, spacing = (10, 20, 5), (1.0, 1.0, 2.0)
    empty, blob = np.zeros(shape, dtype=np.uint8), _cube(shape, (2, 2, 1), 3)
    scores = case_metrics(empty, empty, spacing, {1: "a"}, 1.0)["a"]
    assert scores == {"dice": 1.0, "iou": 1.0, "hd95_mm": 0.0, "nsd": 1.0}
    diagonal = float(np.sqrt(10**2 + 20**2 + 10**2))
    for pred, truth in ((blob, empty), (empty, blob)):
        scores = case_metrics(pred, truth, spacing, {1: "a"}, 1.0)["a"]
        assert scores == {"dice": 0.0, "iou": 0.0, "hd95_mm": pytest.approx(diagonal), "nsd": 0.0}


def test_confusion_matrix_miou_and_pixel_accuracy():
    from pipeline.evaluation.metrics import confusion_matrix, miou_and_pixel_accuracy

    truth = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 1, 0])
    confusion = confusion_matrix(pred, truth, 4)
    assert confusion.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    miou, accuracy = miou_and_pixel_accuracy(confusion)
    # IoU: background 2/4, class 1 2/3, class 2 0/1; class 3 is absent from both and left out of the mean
    assert miou == pytest.approx((2 / 4 + 2 / 3 + 0) / 3)
    assert accuracy == pytest.approx(4 / 6)
    assert miou_and_pixel_accuracy(torch.zeros(3, 3, dtype=torch.int64)) == (1.0, 1.0)


def _nested_tumour(shape=(20, 20, 20)) -> np.ndarray:
    """Values 1 (a 16-voxel cube's shell around), 2 (a 10-voxel cube's shell around) and 3 (a 4-voxel cube), nested."""
    label = np.zeros(shape, dtype=np.uint8)
    label[2:18, 2:18, 2:18] = 1
    label[5:15, 5:15, 5:15] = 2
    label[8:12, 8:12, 8:12] = 3
    return label


def test_region_metrics_score_the_union_of_each_regions_values():
    """Value 2 predicted as 1: the whole tumour is still exact, the tumour core loses its 936 voxels of value 2."""
    from pipeline.data.labels import Region

    truth = _nested_tumour()
    prediction = np.where(truth == 2, 1, truth).astype(np.uint8)
    regions = (Region("whole tumor", (1, 2, 3)), Region("tumor core", (2, 3)), Region("enhancing tumor", (3,)))
    scores = region_metrics(prediction, truth, (1.0, 1.0, 1.0), regions, tolerance_mm=1.0)
    assert list(scores) == ["region whole tumor", "region tumor core", "region enhancing tumor"]
    assert scores["region whole tumor"] == {"dice": 1.0, "iou": 1.0, "hd95_mm": 0.0, "nsd": 1.0}
    assert scores["region tumor core"]["dice"] == pytest.approx(2 * 64 / (64 + 1000))
    assert scores["region tumor core"]["iou"] == pytest.approx(64 / 1000)
    assert scores["region enhancing tumor"]["dice"] == 1.0
