"""A Swin Transformer segmentation model (Liu et al., 2021): MONAI's shifted-window encoder and a UPerNet decoder.

The encoder is MONAI's ``SwinTransformer`` (2D, patch 4), run stage by stage so that each stage's
output *before* patch merging is a feature map: C at stride 4, 2C at 8, 4C at 16, 8C at 32, as in
the Swin paper (MONAI merges after every stage; the merging after the last stage is dropped). Each
feature gets a LayerNorm. The UPerNet decoder (Xiao et al., 2018) puts pyramid pooling on the top
feature, builds a feature pyramid top-down, fuses all levels at stride 4, classifies and upsamples.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.natural.blocks import conv_bn_relu, resize_to
from pipeline.models.natural.pspnet import PyramidPooling


class SwinStages(nn.Module):
    """MONAI ``SwinTransformer`` returning the four stage outputs before merging, each layer-normalised."""

    def __init__(self, in_channels: int, embed_dim: int, depths, num_heads, window_size: int):
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        swin = SwinTransformer(in_channels, embed_dim, (window_size,) * 2, (4, 4), depths, num_heads, spatial_dims=2)
        self.patch_embed, self.pos_drop = swin.patch_embed, swin.pos_drop
        self.stages = nn.ModuleList([swin.layers1[0], swin.layers2[0], swin.layers3[0], swin.layers4[0]])
        self.merges = nn.ModuleList(stage.downsample for stage in self.stages[:-1])
        for stage in self.stages:
            stage.downsample = None
        self.channels = [embed_dim * 2**i for i in range(4)]
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.pos_drop(self.patch_embed(x))
        features = []
        for index, stage in enumerate(self.stages):
            x = stage(x)  # (B, C, H, W)
            features.append(self.norms[index](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
            if index < len(self.merges):
                x = self.merges[index](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return features


class UPerNetHead(nn.Module):
    """Pyramid pooling on the top level, top-down feature pyramid, fusion of all levels at the finest one."""

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 512, bins=(1, 2, 3, 6)):
        super().__init__()
        self.pyramid = PyramidPooling(in_channels[-1], bins)
        self.top = conv_bn_relu(self.pyramid.out_channels, channels)
        self.lateral = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in in_channels[:-1])
        self.smooth = nn.ModuleList(conv_bn_relu(channels, channels) for _ in in_channels[:-1])
        self.fuse = conv_bn_relu(channels * len(in_channels), channels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        levels = [self.top(self.pyramid(features[-1]))]
        for lateral, feature in zip(reversed(self.lateral), reversed(features[:-1])):
            levels.insert(0, lateral(feature) + resize_to(levels[0], feature.shape[-2:]))
        levels = [smooth(level) for smooth, level in zip(self.smooth, levels[:-1])] + [levels[-1]]
        size = levels[0].shape[-2:]
        return self.classifier(self.fuse(torch.cat([resize_to(level, size) for level in levels], dim=1)))


class SwinUPerNet(nn.Module):
    """Swin-T settings by default (embed 96, depths 2-2-6-2, heads 3-6-12-24, window 7); inputs divisible by 32 x window."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        embed_dim: int = 96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size: int = 7,
        decoder_channels: int = 512,
    ):
        super().__init__()
        self.encoder = SwinStages(in_channels, embed_dim, depths, num_heads, window_size)
        self.head = UPerNetHead(self.encoder.channels, num_classes, decoder_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_to(self.head(self.encoder(x)), x.shape[-2:])
