"""Every configured loss ranks a correct prediction below a wrong one; the U-Net weight map behaves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import LossSettings
from pipeline.training.losses import SegmentationLoss, unet_border_weight_map


def _target_and_logits():
    target = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    target[0, 0, 2:6, 2:6] = 1
    target[0, 0, 6:8, 0:3] = 2
    good = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 3, 1, 2).float() * 8.0
    bad = torch.roll(good, shifts=1, dims=1)  # every voxel predicts the wrong class
    return target, good, bad


@pytest.mark.parametrize("name", ["dice", "tversky", "focal_tversky", "dice_ce", "ce", "ce_border"])
def test_loss_prefers_the_correct_prediction(name):
    target, good, bad = _target_and_logits()
    loss = SegmentationLoss(LossSettings(name=name))
    weight = torch.from_numpy(unet_border_weight_map(target[0, 0].numpy()))[None, None] if name == "ce_border" else None
    low, high = loss(good, target, weight).item(), loss(bad, target, weight).item()
    assert np.isfinite(low) and np.isfinite(high)
    assert low < 0.1 * high


def test_focal_tversky_is_tversky_per_class_to_the_power_one_over_gamma():
    target, good, bad = _target_and_logits()
    mixed = 0.5 * good + 0.5 * bad
    from monai.losses import TverskyLoss

    per_class = TverskyLoss(include_background=False, to_onehot_y=True, softmax=True, alpha=0.3, beta=0.7, reduction="none")(
        mixed, target
    )
    focal = SegmentationLoss(LossSettings(name="focal_tversky", alpha=0.3, beta=0.7, gamma=2.0))(mixed, target)
    assert focal.item() == pytest.approx(per_class.pow(0.5).mean().item(), rel=1e-6)


def test_tversky_beta_above_alpha_penalises_missed_foreground_more():
    target, good, _ = _target_and_logits()
    under = good.clone()
    under[0, 0, 2:6, 2:4], under[0, 1, 2:6, 2:4] = 8.0, 0.0  # half of class 1 predicted as background
    fn_heavy = SegmentationLoss(LossSettings(name="tversky", alpha=0.1, beta=0.9))(under, target).item()
    fp_heavy = SegmentationLoss(LossSettings(name="tversky", alpha=0.9, beta=0.1))(under, target).item()
    assert fn_heavy > fp_heavy


def test_border_weights_peak_in_the_gap_between_two_objects():
    label = np.zeros((40, 20), dtype=np.uint8)
    label[5:17, 5:15] = 1
    label[20:32, 5:15] = 1  # a 3-voxel gap at rows 17..19
    weights = unet_border_weight_map(label, w0=10, sigma=5)
    assert weights[18, 10] > 5.0  # in the narrow gap: d1 + d2 is small
    assert weights[39, 0] < weights[18, 10] / 3  # background far from both objects
    single = unet_border_weight_map((label * (np.arange(40)[:, None] < 18)).astype(np.uint8))
    assert len(np.unique(single)) == 2  # one object: class-balance weights only


def test_ce_border_without_weights_is_an_error():
    target, good, _ = _target_and_logits()
    with pytest.raises(ValueError, match="weight map"):
        SegmentationLoss(LossSettings(name="ce_border"))(good, target)


def test_batch_dice_pools_the_samples_before_the_ratio():
    """Sample A: 4 foreground voxels found plus 4 false positives (Dice 8/12); sample B: no foreground and 4 false
    positives (Dice 0). Per sample the loss is 1 - (2/3 + 0) / 2 = 2/3; over the batch as one volume
    1 - 2 * 4 / (12 + 4) = 1/2."""
    target = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    target[0, 0, 0, :] = 1
    predicted = torch.zeros(2, 4, 4, dtype=torch.long)
    predicted[0, 0:2, :] = 1
    predicted[1, 3, :] = 1
    logits = torch.nn.functional.one_hot(predicted, 2).permute(0, 3, 1, 2).float() * 40.0
    per_sample = SegmentationLoss(LossSettings(name="dice"))(logits, target).item()
    pooled = SegmentationLoss(LossSettings(name="dice", batch=True))(logits, target).item()
    assert per_sample == pytest.approx(2 / 3, abs=1e-4)
    assert pooled == pytest.approx(1 / 2, abs=1e-4)
