"""The U-Net of Ronneberger et al. (2015), 2D, with configurable widths and depth.

Differences from the paper, chosen for segmentation of resampled CT and MR slices: 'same' padding (so
the output has the input's shape and sliding windows tile exactly), batch normalisation after
each convolution (as in the issue and nnU-Net), and PReLU instead of ReLU by default (``activation``). With ReLU, on
an MR set of four organs where three are bright blobs alike to fat (``abdomen_mr`` in ``benchmarks/RESULTS.md``), all
16 units of the last decoder level were zero on 68 % of the right kidney's and 53 % of the spleen's pixels after
training: there the network outputs the head's bias (a near-uniform softmax) and passes no gradient back, and the three
organs stayed at validation Dice 0.0 for the whole CPU budget. A learned negative slope, the V-Net's, keeps a gradient.

The contracting path lives in ``encoder`` and the expanding path in ``decoder`` so autoencoders can share and transfer
the encoder weights.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config.network_topology import Sizes, resolve_topology, same_padding, total_stride
from pipeline.models.layers import activation_layer, norm_layer


class DoubleConv2d(nn.Sequential):
    """Two convolutions (3x3 in the paper), each followed by normalisation and the activation (ReLU in the paper)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        norm: str = "batch",
        kernel: tuple[int, int] = (3, 3),
        activation: str = "prelu",
    ) -> None:
        pad = same_padding(kernel)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, padding=pad, bias=norm == "none"),
            norm_layer(norm, out_channels, 2),
            activation_layer(activation, out_channels),
            nn.Conv2d(out_channels, out_channels, kernel, padding=pad, bias=norm == "none"),
            norm_layer(norm, out_channels, 2),
            activation_layer(activation, out_channels),
        )


class UNetEncoder2d(nn.Module):
    """Contracting path: a double convolution per level, max pooling between levels (2x2 in the paper; ``pools[i]``
    leads into level ``i``).

    ``forward`` returns the feature map of every level, finest first (the last is the bottleneck).
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...],
        norm: str = "batch",
        pools: Sizes | None = None,
        kernels: Sizes | None = None,
        activation: str = "prelu",
    ) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.pools, self.kernels = resolve_topology(len(widths), 2, pools, kernels, 3)
        chans = (in_channels, *widths)
        self.levels = nn.ModuleList(
            DoubleConv2d(chans[i], chans[i + 1], norm, self.kernels[i], activation) for i in range(len(widths))
        )
        self.pooling = [nn.MaxPool2d(p) for p in self.pools]  # parameter-free: not registered, state_dict keys unchanged

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, level in enumerate(self.levels):
            x = level(x if i == 0 else self.pooling[i](x))
            features.append(x)
        return features


class UNetDecoder2d(nn.Module):
    """Expanding path: transposed convolution (the encoder's pooling reversed), concatenation with the skip, double
    convolution."""

    def __init__(
        self,
        widths: tuple[int, ...],
        norm: str = "batch",
        pools: Sizes | None = None,
        kernels: Sizes | None = None,
        activation: str = "prelu",
    ):
        super().__init__()
        rev = tuple(reversed(widths))
        pools, kernels = resolve_topology(len(widths), 2, pools, kernels, 3)
        rpools, rkernels = tuple(reversed(pools)), tuple(reversed(kernels))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(rev[i], rev[i + 1], rpools[i], stride=rpools[i]) for i in range(len(rev) - 1))
        self.convs = nn.ModuleList(
            DoubleConv2d(2 * rev[i + 1], rev[i + 1], norm, rkernels[i + 1], activation) for i in range(len(rev) - 1)
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, conv, skip in zip(self.ups, self.convs, reversed(features[:-1])):
            x = conv(torch.cat([skip, up(x)], dim=1))
        return x


class UNet2d(nn.Module):
    """2D U-Net: encoder, decoder and a 1x1 convolution to class logits.

    Args:
        in_channels: input channels (1 for CT, 2k+1 for 2.5D with k neighbouring slices each side).
        num_classes: output channels (background included).
        widths: features per level, finest first; the input size must be divisible by 2**(len-1).
        norm: ``batch`` (paper-style U-Net with BN), ``instance`` or ``none``.
        pools: per-level, per-axis pooling (``pools[0]`` all ones); default 2x2 everywhere.
        kernels: per-level, per-axis convolution sizes; default 3x3 everywhere.
        activation: ``prelu`` (default), ``leaky_relu`` or ``relu`` (the paper's).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: tuple[int, ...] = (32, 64, 128, 256, 512),
        norm: str = "batch",
        pools: Sizes | None = None,
        kernels: Sizes | None = None,
        activation: str = "prelu",
    ):
        super().__init__()
        self.encoder = UNetEncoder2d(in_channels, widths, norm, pools, kernels, activation)
        self.decoder = UNetDecoder2d(widths, norm, self.encoder.pools, self.encoder.kernels, activation)
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.divisor = total_stride(self.encoder.pools)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x)))
