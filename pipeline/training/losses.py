"""Segmentation losses from config. Every loss takes ``(logits, target, weight=None)`` where
``logits`` is (B, C, *spatial), ``target`` holds class indices (B, 1, *spatial) and ``weight`` is an
optional per-voxel map (B, 1, *spatial) used by ``ce_border``.

MONAI provides Dice, Tversky and Dice+CE; focal-Tversky (Abraham & Khan 2019) is MONAI's
per-class Tversky loss raised to ``1 / gamma``; ``ce_border`` is cross-entropy weighted by the
U-Net paper's map w(x) = w_c(x) + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)) computed per patch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from pipeline.config import LossSettings


class SegmentationLoss(nn.Module):
    """Wraps the configured criterion behind one call signature."""

    def __init__(self, settings: LossSettings) -> None:
        super().__init__()
        from monai import losses

        self.settings = settings
        common = {
            "include_background": settings.include_background,
            "to_onehot_y": True,
            "softmax": True,
            "batch": settings.batch,
        }
        name = settings.name
        if name == "dice":
            self.criterion = losses.DiceLoss(**common)
        elif name in ("tversky", "focal_tversky"):
            reduction = "none" if name == "focal_tversky" else "mean"
            self.criterion = losses.TverskyLoss(**common, alpha=settings.alpha, beta=settings.beta, reduction=reduction)
        elif name == "dice_ce":
            self.criterion = losses.DiceCELoss(**common)
        else:
            self.criterion = None

    @property
    def needs_weight_map(self) -> bool:
        return self.settings.name == "ce_border"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        name = self.settings.name
        if name in ("ce", "ce_border"):
            per_voxel = F.cross_entropy(logits.float(), target[:, 0], reduction="none")
            if name == "ce_border":
                if weight is None:
                    raise ValueError("ce_border needs the per-voxel weight map (batch key 'weight')")
                per_voxel = per_voxel * weight[:, 0]
            return per_voxel.mean()
        loss = self.criterion(logits.float(), target)
        if name == "focal_tversky":
            loss = loss.clamp_min(0).pow(1.0 / self.settings.gamma).mean()
        return loss


def unet_border_weight_map(label: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The U-Net paper's weight map for one label patch (any dimensionality).

    ``w_c`` balances class frequencies in the patch (mean weight 1 per present class); the border
    term uses d1, d2 = distances to the nearest and second-nearest foreground object (connected
    components) and is applied to background voxels, where separating borders lie.

    Returns:
        float32 array of ``label.shape``.
    """
    values, counts = np.unique(label, return_counts=True)
    class_weight = {v: label.size / (len(values) * c) for v, c in zip(values, counts)}
    weights = np.vectorize(class_weight.get, otypes=[np.float32])(label)
    objects, count = ndimage.label(label > 0)
    if count >= 2 and w0 > 0:
        distances = np.stack([ndimage.distance_transform_edt(objects != i) for i in range(1, count + 1)])
        distances.sort(axis=0)
        border = w0 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * sigma**2))
        weights += np.where(label == 0, border, 0).astype(np.float32)
    return weights.astype(np.float32)
