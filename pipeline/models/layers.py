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


def activation_layer(kind: str, channels: int) -> nn.Module:
    """``relu`` (in place), ``leaky_relu`` (slope 0.01, nnU-Net's) or ``prelu`` (a learned slope per channel, the
    V-Net's, starting at 0.25)."""
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.01, inplace=True)
    if kind == "prelu":
        return nn.PReLU(channels)
    raise ValueError(f"unknown activation {kind!r}; expected relu, leaky_relu or prelu")
