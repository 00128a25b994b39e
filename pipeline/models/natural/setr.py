"""SETR (Zheng et al., 2021): a ViT encoder (MONAI ``ViT``) on 16x16 patches and three decoders.

- ``naive``: 1x1 conv + BN + ReLU + 1x1 classifier on the last layer's tokens, bilinear x16.
- ``pup`` (progressive upsampling): four (3x3 conv + BN + ReLU + bilinear x2) stages, then a classifier.
- ``mla`` (multi-level aggregation): tokens of layers L/4, L/2, 3L/4 and L, projected to 256 channels,
  aggregated top-down by summation, each refined (3x3, 3x3 to 128) and upsampled x4, concatenated,
  classified and upsampled x4.

The ViT's position embedding fixes the input size (``image_size``): train and predict with
patches of exactly that size (sliding windows do this).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.natural.blocks import conv_bn_relu, resize_to


class SETR(nn.Module):
    """SETR with decoder ``naive``, ``pup`` or ``mla``; the paper's encoder is ViT-Large (1024, 24 layers, 16 heads)."""

    def __init__(
        self,
        decoder: str,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int] = (512, 512),
        hidden_size: int = 1024,
        mlp_dim: int = 4096,
        num_layers: int = 24,
        num_heads: int = 16,
        decoder_channels: int = 256,
    ):
        super().__init__()
        from monai.networks.nets import ViT

        if decoder not in ("naive", "pup", "mla"):
            raise ValueError(f"SETR decoder must be naive, pup or mla, got {decoder!r}")
        self.decoder, self.grid = decoder, (image_size[0] // 16, image_size[1] // 16)
        self.encoder = ViT(
            in_channels, image_size, 16, hidden_size, mlp_dim, num_layers, num_heads, classification=False, spatial_dims=2
        )
        c = decoder_channels
        if decoder == "naive":
            self.head = nn.Sequential(conv_bn_relu(hidden_size, c, 1), nn.Conv2d(c, num_classes, 1))
        elif decoder == "pup":
            stages = [conv_bn_relu(hidden_size if i == 0 else c, c) for i in range(4)]
            self.head = nn.ModuleList([*stages, nn.Conv2d(c, num_classes, 1)])
        else:
            self.levels = [num_layers * k // 4 - 1 for k in (1, 2, 3, 4)]
            self.project = nn.ModuleList(conv_bn_relu(hidden_size, c, 1) for _ in self.levels)
            self.refine = nn.ModuleList(nn.Sequential(conv_bn_relu(c, c), conv_bn_relu(c, c // 2)) for _ in self.levels)
            self.head = nn.Conv2d(len(self.levels) * (c // 2), num_classes, 1)

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last, hidden = self.encoder(x)
        if self.decoder == "naive":
            return resize_to(self.head(self._grid(last)), x.shape[-2:])
        if self.decoder == "pup":
            y = self._grid(last)
            for stage in self.head[:-1]:
                y = resize_to(stage(y), (y.shape[-2] * 2, y.shape[-1] * 2))
            return self.head[-1](y)
        levels = [project(self._grid(hidden[i])) for project, i in zip(self.project, self.levels)]
        for i in reversed(range(len(levels) - 1)):  # top-down: each level adds the one above it
            levels[i] = levels[i] + levels[i + 1]
        size = (self.grid[0] * 4, self.grid[1] * 4)
        fused = torch.cat([resize_to(refine(level), size) for refine, level in zip(self.refine, levels)], dim=1)
        return resize_to(self.head(fused), x.shape[-2:])
