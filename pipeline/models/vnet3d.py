"""The V-Net of Milletari et al. (2016), 3D, with configurable widths.

Each stage is a stack of 5x5x5 convolutions with PReLU whose output is added element-wise to the
stage input (residual stage). Down-sampling is a 2x2x2 stride-2 convolution, up-sampling a 2x2x2
stride-2 transposed convolution whose output is concatenated with the skip of the same level.
MONAI's ``VNet`` fixes the paper's widths (16..256); this one takes them from config so the CPU
default can be slim and a GPU config can use the paper's. Normalisation is configurable (the
paper used none; MONAI uses batch norm). ``encoder``/``decoder`` split as in the U-Net.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config.network_topology import Sizes, resolve_topology, same_padding, total_stride
from pipeline.models.layers import norm_layer


class ResidualStage3d(nn.Module):
    """``num_convs`` (conv -> norm -> PReLU) layers; the input is added before the last PReLU."""

    def __init__(self, channels: int, num_convs: int, kernel_size: tuple[int, int, int], norm: str) -> None:
        super().__init__()
        pad = same_padding(kernel_size)
        self.convs = nn.ModuleList(
            nn.Conv3d(channels, channels, kernel_size, padding=pad, bias=norm == "none") for _ in range(num_convs)
        )
        self.norms = nn.ModuleList(norm_layer(norm, channels, 3) for _ in range(num_convs))
        self.acts = nn.ModuleList(nn.PReLU(channels) for _ in range(num_convs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i, (conv, norm, act) in enumerate(zip(self.convs, self.norms, self.acts)):
            out = norm(conv(out))
            out = act(out + x if i == len(self.convs) - 1 else out)
        return out


class VNetEncoder3d(nn.Module):
    """Input stage (conv to ``widths[0]`` + residual from the input) and down-sampling stages.

    Down-sampling into stage ``i`` is a convolution whose kernel and stride are ``pools[i]`` (2x2x2 in
    the paper; 2x2x1 leaves a coarse axis alone). ``forward`` returns every stage's output, finest
    first (the last is the bottom stage).
    """

    def __init__(
        self,
        in_channels: int,
        widths: tuple[int, ...],
        convs: tuple[int, ...],
        kernel_size: int,
        norm: str,
        pools: Sizes | None = None,
        kernels: Sizes | None = None,
    ):
        super().__init__()
        self.widths = tuple(widths)
        self.pools, self.kernels = resolve_topology(len(widths), 3, pools, kernels, kernel_size)
        self.stem = nn.Conv3d(in_channels, widths[0], self.kernels[0], padding=same_padding(self.kernels[0]))
        self.stem_skip = nn.Conv3d(in_channels, widths[0], 1, bias=False)
        self.stem_act = nn.PReLU(widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(widths[i], widths[i + 1], self.pools[i + 1], stride=self.pools[i + 1]),
                norm_layer(norm, widths[i + 1], 3),
                nn.PReLU(widths[i + 1]),
            )
            for i in range(len(widths) - 1)
        )
        self.stages = nn.ModuleList(
            ResidualStage3d(widths[i + 1], convs[i + 1], self.kernels[i + 1], norm) for i in range(len(widths) - 1)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.stem_act(self.stem(x) + self.stem_skip(x))
        features = [out]
        for down, stage in zip(self.downs, self.stages):
            out = stage(down(out))
            features.append(out)
        return features


class VNetDecoder3d(nn.Module):
    """Up-sampling stages: transposed conv to half width (the encoder's pooling reversed), concatenation with the
    skip, residual stage with the kernel of that level."""

    def __init__(self, widths: tuple[int, ...], convs: tuple[int, ...], pools: Sizes, kernels: Sizes, norm: str) -> None:
        super().__init__()
        rev, rconvs = tuple(reversed(widths)), tuple(reversed(convs))
        rpools, rkernels = tuple(reversed(pools)), tuple(reversed(kernels))
        self.ups = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose3d(rev[i] if i == 0 else 2 * rev[i], rev[i + 1], rpools[i], stride=rpools[i]),
                norm_layer(norm, rev[i + 1], 3),
                nn.PReLU(rev[i + 1]),
            )
            for i in range(len(rev) - 1)
        )
        self.stages = nn.ModuleList(
            ResidualStage3d(2 * rev[i + 1], rconvs[i + 1], rkernels[i + 1], norm) for i in range(len(rev) - 1)
        )
        self.out_channels = 2 * widths[0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for up, stage, skip in zip(self.ups, self.stages, reversed(features[:-1])):
            x = stage(torch.cat([up(x), skip], dim=1))
        return x


class VNet3d(nn.Module):
    """3D V-Net: encoder, decoder, 1x1x1 convolution to class logits.

    Args:
        in_channels: input channels.
        num_classes: output channels (background included).
        widths: features per stage, finest first (paper: 16, 32, 64, 128, 256).
        convs: convolutions per stage, same length as ``widths`` (paper: 1, 2, 3, 3, 3).
        kernel_size: convolution size inside the stages (paper: 5).
        norm: ``batch``, ``instance`` or ``none``.
        pools: per-stage, per-axis strides (``pools[0]`` all ones); default 2 on every axis.
        kernels: per-stage, per-axis convolution sizes; default ``kernel_size`` everywhere.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: tuple[int, ...] = (16, 32, 64, 128, 256),
        convs: tuple[int, ...] = (1, 2, 3, 3, 3),
        kernel_size: int = 5,
        norm: str = "batch",
        pools: Sizes | None = None,
        kernels: Sizes | None = None,
    ) -> None:
        super().__init__()
        if len(convs) != len(widths):
            raise ValueError(f"convs {list(convs)} must have one entry per width {list(widths)}")
        self.encoder = VNetEncoder3d(in_channels, widths, convs, kernel_size, norm, pools, kernels)
        self.decoder = VNetDecoder3d(widths, convs, self.encoder.pools, self.encoder.kernels, norm)
        self.head = nn.Conv3d(self.decoder.out_channels, num_classes, 1)
        self.divisor = total_stride(self.encoder.pools)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x)))
