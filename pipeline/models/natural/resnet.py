"""A dilated ResNet backbone (He et al., 2016) for PSPNet and DeepLab v2-v3+.

Written here because MONAI's ResNet has no dilation and torchvision does not load on these
machines. ``output_stride`` 8 or 16 replaces the strides of the last one or two stages by dilation
(rates 2 and 4, or 2), as in DeepLab and PSPNet; 32 is the classification network. ``width``
scales every stage (64 in the paper). The stem is the original 7x7 convolution + max-pooling
(PSPNet's deep three-convolution stem is not used).
"""

from __future__ import annotations

import torch
from torch import nn

LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, dilated) -> 1x1 with expansion 4 and a projection shortcut when shapes change."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, dilation: int):
        super().__init__()
        out = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out, 1, bias=False),
            nn.BatchNorm2d(out),
        )
        self.shortcut = _shortcut(in_channels, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, dilation: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(width),
        )
        self.shortcut = _shortcut(in_channels, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class DilatedResNet(nn.Module):
    """ResNet returning the stride-4 features (``low``, after stage 1) and the last stage's (``high``).

    Args:
        in_channels: image channels.
        depth: 18, 34, 50, 101 or 152.
        width: channels of the first stage before expansion (64 in the paper).
        output_stride: 8, 16 or 32.
    """

    def __init__(self, in_channels: int, depth: int = 101, width: int = 64, output_stride: int = 8):
        super().__init__()
        if depth not in LAYERS or output_stride not in (8, 16, 32):
            raise ValueError(
                f"ResNet depth must be one of {sorted(LAYERS)} and output_stride 8, 16 or 32; got {depth}, {output_stride}"
            )
        block = BasicBlock if depth < 50 else Bottleneck
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, 2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1),
        )
        strides = {8: (1, 2, 1, 1), 16: (1, 2, 2, 1), 32: (1, 2, 2, 2)}[output_stride]
        dilations = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2), 32: (1, 1, 1, 1)}[output_stride]
        stages, channels, self.stage_channels = [], width, []
        for index, count in enumerate(LAYERS[depth]):
            stage_width = width * 2**index
            blocks = []
            for i in range(count):
                blocks.append(block(channels, stage_width, strides[index] if i == 0 else 1, dilations[index]))
                channels = stage_width * block.expansion
            stages.append(nn.Sequential(*blocks))
            self.stage_channels.append(channels)
        self.stages = nn.ModuleList(stages)
        self.low_channels = width * block.expansion
        self.out_channels = channels

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output, finest first (C2-C5 of the FPN paper: strides 4, 8, 16, 32 at output_stride 32)."""
        features = [self.stages[0](self.stem(x))]
        for stage in self.stages[1:]:
            features.append(stage(features[-1]))
        return features

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        low = self.stages[0](x)
        x = low
        for stage in self.stages[1:]:
            x = stage(x)
        return {"low": low, "high": x}
