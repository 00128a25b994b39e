"""Building blocks shared by the natural-image architectures: conv-BN-ReLU, upsampling choices, unpooling, VGG16."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

VGG16_CONVS = (2, 2, 3, 3, 3)  # convolutions per block
VGG16_WIDTHS = (64, 128, 256, 512, 512)


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel: int = 3, dilation: int = 1, batch_norm: bool = True
) -> nn.Sequential:
    """A 'same'-padded convolution, optional batch norm, ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """Weights of a transposed convolution that performs bilinear upsampling per channel (FCN's initialisation)."""
    factor = (kernel + 1) // 2
    centre = factor - 1 if kernel % 2 == 1 else factor - 0.5
    grid = torch.arange(kernel, dtype=torch.float32)
    filt = 1 - (grid - centre).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return weight


class Upsample(nn.Module):
    """Upsampling by an integer factor: ``nearest``, ``bilinear`` (fixed) or ``transposed`` (learned, bilinear-initialised)."""

    def __init__(self, channels: int, factor: int, mode: str):
        super().__init__()
        if mode not in ("nearest", "bilinear", "transposed"):
            raise ValueError(f"upsampling mode must be nearest, bilinear or transposed, got {mode!r}")
        self.factor, self.mode = factor, mode
        if mode == "transposed":
            self.deconv = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
            with torch.no_grad():
                self.deconv.weight.copy_(bilinear_kernel(channels, 2 * factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transposed":
            return self.deconv(x)
        return F.interpolate(
            x, scale_factor=self.factor, mode=self.mode, **({"align_corners": False} if self.mode == "bilinear" else {})
        )


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a feature map to ``size`` (H, W)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def unpool(x: torch.Tensor, indices: torch.Tensor | None, mode: str, output_size: torch.Size) -> torch.Tensor:
    """Undo a 2x2 max-pooling: ``max_unpool`` (values back at the pooled positions), ``bed_of_nails``
    (values at the top-left of each 2x2 cell, zeros elsewhere) or ``nearest`` (values copied to the cell)."""
    if mode == "max_unpool":
        return F.max_unpool2d(x, indices, 2, 2, output_size=output_size[-2:])
    if mode == "bed_of_nails":
        out = x.new_zeros((*x.shape[:2], *output_size[-2:]))
        out[..., ::2, ::2] = x
        return out
    if mode == "nearest":
        return F.interpolate(x, size=output_size[-2:], mode="nearest")
    raise ValueError(f"unpooling mode must be max_unpool, bed_of_nails or nearest, got {mode!r}")


class VGGEncoder(nn.Module):
    """VGG16's 13 convolutions in 5 blocks, each followed by 2x2 max-pooling (indices kept for unpooling).

    Args:
        in_channels: image channels.
        widths: channels of the 5 blocks (VGG16: 64, 128, 256, 512, 512).
        batch_norm: BN after each convolution (SegNet, DeconvNet) or not (FCN, DeepLab v1).
        dilated_tail: DeepLab v1: pools 4 and 5 become 3x3 stride-1 pools and block 5 is dilated by 2 (output stride 8).
    """

    def __init__(self, in_channels: int, widths=VGG16_WIDTHS, batch_norm: bool = True, dilated_tail: bool = False):
        super().__init__()
        self.widths, self.dilated_tail = tuple(widths), dilated_tail
        blocks, channels = [], in_channels
        for index, (count, width) in enumerate(zip(VGG16_CONVS, widths)):
            dilation = 2 if dilated_tail and index == 4 else 1
            layers = [
                conv_bn_relu(channels if i == 0 else width, width, dilation=dilation, batch_norm=batch_norm) for i in range(count)
            ]
            blocks.append(nn.Sequential(*layers))
            channels = width
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Size]]:
        """Returns (pooled output of each block, pooling indices, pre-pool sizes)."""
        pooled, indices, sizes = [], [], []
        for index, block in enumerate(self.blocks):
            x = block(x)
            sizes.append(x.shape)
            if self.dilated_tail and index >= 3:
                x, where = F.max_pool2d(x, 3, 1, 1), None
            else:
                x, where = F.max_pool2d(x, 2, 2, return_indices=True)
            pooled.append(x)
            indices.append(where)
        return pooled, indices, sizes
