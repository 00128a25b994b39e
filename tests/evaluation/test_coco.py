"""COCO AP through pycocotools: an oracle scores 1.0; a shifted box moves AP50 and AP75 as worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.data.instances import Instances
from pipeline.evaluation.coco import ScoredImage, coco_metrics


def _truth() -> Instances:
    masks = torch.zeros(2, 200, 200, dtype=torch.bool)
    masks[0, 10:110, 20:120] = True  # class 1, 100 x 100
    masks[1, 150:190, 140:190] = True  # class 2, 40 x 50
    return Instances(torch.tensor([[10.0, 20, 110, 120], [150, 140, 190, 190]]), torch.tensor([1, 2]), masks)


def test_oracle_predictions_score_one():
    truth = _truth()
    metrics = coco_metrics([ScoredImage(truth, truth, np.array([0.9, 0.8]))], num_classes=3)
    assert set(metrics) == {f"{k}_{m}" for k in ("box", "mask") for m in ("ap", "ap50", "ap75")}
    assert all(v == pytest.approx(1.0) for v in metrics.values())


def test_a_shifted_box_keeps_ap50_and_loses_ap75():
    truth = _truth()
    masks = truth.masks.clone()
    masks[0] = False
    masks[0, 30:130, 20:120] = True  # shifted by 20 px: IoU = 8000 / 12000 = 0.667
    shifted = Instances(torch.tensor([[30.0, 20, 130, 120], [150, 140, 190, 190]]), truth.labels, masks)
    metrics = coco_metrics([ScoredImage(truth, shifted, np.array([0.9, 0.8]))], num_classes=3)
    # class 1 matches at IoU thresholds .50-.65 (4 of 10), class 2 at all: AP = (0.4 + 1) / 2; AP75 = (0 + 1) / 2
    for kind in ("box", "mask"):
        assert metrics[f"{kind}_ap50"] == pytest.approx(1.0)
        assert metrics[f"{kind}_ap75"] == pytest.approx(0.5)
        assert metrics[f"{kind}_ap"] == pytest.approx(0.7)


def test_no_detections_score_zero_and_no_ground_truth_has_no_ap():
    truth = _truth()
    empty = Instances(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0, 200, 200, dtype=torch.bool))
    assert all(v == 0.0 for v in coco_metrics([ScoredImage(truth, empty, np.zeros(0))], 3).values())
    assert all(math.isnan(v) for v in coco_metrics([ScoredImage(empty, truth, np.array([0.9, 0.8]))], 3).values())
