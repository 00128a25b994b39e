"""DeepLab v1, v2, v3 and v3+ (Chen et al., 2015-2018).

- **v1 (LargeFOV)**: VGG16 with pools 4-5 at stride 1 and block 5 dilated by 2 (output stride 8),
  fc6 as a 3x3 convolution dilated by 12 with 1024 channels, fc7 1x1, a classifier, bilinear
  upsampling. The paper's dense CRF is :func:`pipeline.inference.crf.dense_crf` (``model.crf: true``).
- **v2**: dilated ResNet (output stride 8) and ASPP-L: four 3x3 classifiers dilated by 6, 12, 18, 24, summed.
- **v3**: dilated ResNet (output stride 16) and ASPP with a 1x1 branch, three 3x3 branches dilated by
  6, 12, 18 and image-level pooling, concatenated, 1x1 projection, classifier. ``cascade`` > 0 adds
  the paper's cascaded atrous blocks (copies of the last stage with doubling dilation) before ASPP.
- **v3+**: v3's encoder and a decoder that upsamples by 4, concatenates the stride-4 features
  (reduced to 48 channels), refines with two 3x3 convolutions and upsamples by 4 again.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.natural.blocks import VGG16_WIDTHS, VGGEncoder, conv_bn_relu, resize_to
from pipeline.models.natural.resnet import Bottleneck, DilatedResNet


class DeepLabV1(nn.Module):
    """DeepLab-LargeFOV on VGG16."""

    def __init__(self, in_channels: int, num_classes: int, widths=VGG16_WIDTHS, fc_width: int = 1024, fc_dilation: int = 12):
        super().__init__()
        self.encoder = VGGEncoder(in_channels, widths, batch_norm=False, dilated_tail=True)
        self.head = nn.Sequential(
            nn.Conv2d(widths[-1], fc_width, 3, padding=fc_dilation, dilation=fc_dilation),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
            nn.Conv2d(fc_width, fc_width, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
            nn.Conv2d(fc_width, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, _, _ = self.encoder(x)
        return resize_to(self.head(pooled[-1]), x.shape[-2:])


class ASPPSum(nn.Module):
    """DeepLab v2's ASPP: one 3x3 classifier per rate, their scores summed."""

    def __init__(self, in_channels: int, num_classes: int, rates=(6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(branch(x) for branch in self.branches)


class ASPP(nn.Module):
    """DeepLab v3's ASPP: 1x1 + one 3x3 per rate + image pooling, concatenated and projected to ``channels``."""

    def __init__(self, in_channels: int, channels: int = 256, rates=(6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, channels, 1), *(conv_bn_relu(in_channels, channels, 3, r) for r in rates)]
        )
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_channels, channels, 1))
        self.project = nn.Sequential(conv_bn_relu(channels * (len(rates) + 2), channels, 1), nn.Dropout2d(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        return self.project(torch.cat([*(branch(x) for branch in self.branches), pooled], dim=1))


def _cascade(channels: int, count: int, first_dilation: int) -> nn.Sequential:
    """The cascaded atrous blocks of DeepLab v3 (blocks 5-7): bottlenecks with doubling dilation."""
    width = channels // Bottleneck.expansion
    return nn.Sequential(*(Bottleneck(channels, width, 1, first_dilation * 2 ** (i + 1)) for i in range(count)))


class DeepLabResNet(nn.Module):
    """DeepLab v2, v3 or v3+ on a dilated ResNet."""

    def __init__(
        self,
        version: str,
        in_channels: int,
        num_classes: int,
        depth: int = 101,
        width: int = 64,
        aspp_channels: int = 256,
        rates=(6, 12, 18),
        cascade: int = 0,
        low_level_channels: int = 48,
    ):
        super().__init__()
        self.version = version
        if version not in ("v2", "v3", "v3plus"):
            raise ValueError(f"DeepLab on ResNet is v2, v3 or v3plus, got {version!r}")
        self.backbone = DilatedResNet(in_channels, depth, width, output_stride=8 if version == "v2" else 16)
        channels = self.backbone.out_channels
        self.cascade = _cascade(channels, cascade, 2) if cascade else nn.Identity()
        if version == "v2":
            self.head = ASPPSum(channels, num_classes, rates)
            return
        self.aspp = ASPP(channels, aspp_channels, rates)
        if version == "v3":
            self.head = nn.Conv2d(aspp_channels, num_classes, 1)
            return
        self.reduce_low = conv_bn_relu(self.backbone.low_channels, low_level_channels, 1)
        self.head = nn.Sequential(
            conv_bn_relu(aspp_channels + low_level_channels, aspp_channels),
            conv_bn_relu(aspp_channels, aspp_channels),
            nn.Conv2d(aspp_channels, num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        high = self.cascade(features["high"])
        if self.version == "v2":
            return resize_to(self.head(high), x.shape[-2:])
        context = self.aspp(high)
        if self.version == "v3":
            return resize_to(self.head(context), x.shape[-2:])
        low = self.reduce_low(features["low"])
        fused = torch.cat([resize_to(context, low.shape[-2:]), low], dim=1)
        return resize_to(self.head(fused), x.shape[-2:])
