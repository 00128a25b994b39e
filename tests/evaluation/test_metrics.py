"""Dice per class with the documented empty-mask convention (V6): never NaN."""

from __future__ import annotations

import pytest
import torch

from pipeline.evaluation.metrics import dice_per_class


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
