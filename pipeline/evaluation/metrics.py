"""Overlap metrics on label maps.

Dice convention (RELIABILITY V6): a class absent from both prediction and ground truth scores 1.0,
absent from the ground truth but predicted scores 0.0, so an aggregate is never NaN.
"""

from __future__ import annotations

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
