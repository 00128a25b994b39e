"""PSPNet (Zhao et al., 2017): a dilated ResNet (output stride 8) and the pyramid pooling module.

The pyramid pools the last feature map to 1x1, 2x2, 3x3 and 6x6 bins, reduces each to a quarter of
the channels (1x1 conv + BN + ReLU), upsamples them bilinearly and concatenates them with the
features; a 3x3 conv, dropout and a 1x1 classifier follow, then bilinear upsampling to the input.
The auxiliary loss on stage 3 is not used.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.natural.blocks import conv_bn_relu, resize_to
from pipeline.models.natural.resnet import DilatedResNet


class PyramidPooling(nn.Module):
    """Pool to each of ``bins`` (square grids), reduce channels, upsample, concatenate with the input."""

    def __init__(self, in_channels: int, bins=(1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)
        reduced = in_channels // len(self.bins)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(in_channels, reduced, 1, bias=False),
                nn.BatchNorm2d(reduced),
                nn.ReLU(inplace=True),
            )
            for b in self.bins
        )
        self.out_channels = in_channels + reduced * len(self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x, *(resize_to(branch(x), size) for branch in self.branches)], dim=1)


class PSPNet(nn.Module):
    """PSPNet; ``depth`` 50 or 101 in the paper, ``width`` 64."""

    def __init__(
        self, in_channels: int, num_classes: int, depth: int = 50, width: int = 64, bins=(1, 2, 3, 6), head_channels: int = 512
    ):
        super().__init__()
        self.backbone = DilatedResNet(in_channels, depth, width, output_stride=8)
        self.pyramid = PyramidPooling(self.backbone.out_channels, bins)
        self.head = nn.Sequential(
            conv_bn_relu(self.pyramid.out_channels, head_channels), nn.Dropout2d(0.1), nn.Conv2d(head_channels, num_classes, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.head(self.pyramid(self.backbone(x)["high"])), x.shape[-2:])
