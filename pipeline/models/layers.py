"""Small building blocks shared by the networks."""

from __future__ import annotations

from torch import nn


def norm_layer(kind: str, channels: int, spatial_dims: int) -> nn.Module:
    """``batch``, ``instance`` (affine) or ``none`` normalisation for 2D or 3D feature maps."""
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    return nn.Identity()
