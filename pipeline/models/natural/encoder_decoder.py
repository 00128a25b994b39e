"""Encoder-decoder networks that undo VGG16's pooling: DeconvNet (Noh et al., 2015) and SegNet (Badrinarayanan et al., 2017).

Both decoders *unpool* with the encoder's max-pooling indices (``unpool: max_unpool``, as in the
papers), or with ``bed_of_nails`` / ``nearest`` for comparison. DeconvNet keeps VGG16's fully
connected layers as a 7x7 convolution to a 1x1 map and mirrors it with a 7x7 deconvolution, then
mirrors every block with deconvolution layers; SegNet drops the fully connected layers and mirrors
each block with convolutions. Batch norm follows every layer in both.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.natural.blocks import VGG16_CONVS, VGG16_WIDTHS, VGGEncoder, conv_bn_relu, unpool


def _decoder_block(width: int, out_width: int, count: int, transposed: bool) -> nn.Sequential:
    """``count`` layers at ``width`` channels, the last one going to ``out_width`` (a mirrored VGG block)."""
    layers = []
    for i in range(count):
        out = out_width if i == count - 1 else width
        if transposed:
            layers += [nn.ConvTranspose2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        else:
            layers.append(conv_bn_relu(width, out))
    return nn.Sequential(*layers)


class UnpoolingDecoderNet(nn.Module):
    """Shared body of DeconvNet and SegNet: VGG16 encoder, optional fc bottleneck, mirrored unpooling decoder."""

    def __init__(
        self, in_channels: int, num_classes: int, widths, unpool_mode: str, fc_width: int | None, fc_kernel: int, transposed: bool
    ):
        super().__init__()
        self.unpool_mode = unpool_mode
        self.encoder = VGGEncoder(in_channels, widths, batch_norm=True)
        self.bottleneck = nn.Identity()
        if fc_width:
            self.bottleneck = nn.Sequential(
                nn.Conv2d(widths[-1], fc_width, fc_kernel, bias=False),  # fc6: 7x7 -> 1x1 ('valid')
                nn.BatchNorm2d(fc_width),
                nn.ReLU(inplace=True),
                nn.Conv2d(fc_width, fc_width, 1, bias=False),  # fc7
                nn.BatchNorm2d(fc_width),
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(fc_width, widths[-1], fc_kernel, bias=False),  # deconv-fc6: 1x1 -> 7x7
                nn.BatchNorm2d(widths[-1]),
                nn.ReLU(inplace=True),
            )
        outs = [widths[0], *widths[:-1]]  # block k's decoder ends at block k-1's width (block 1 keeps its own)
        self.decoder = nn.ModuleList(_decoder_block(w, o, c, transposed) for w, o, c in zip(widths, outs, VGG16_CONVS))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1 if transposed else 3, padding=0 if transposed else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, indices, sizes = self.encoder(x)
        x = self.bottleneck(pooled[-1])
        for block in reversed(range(len(self.decoder))):
            x = self.decoder[block](unpool(x, indices[block], self.unpool_mode, sizes[block]))
        return self.classifier(x)


def deconvnet(
    in_channels: int,
    num_classes: int,
    widths=VGG16_WIDTHS,
    fc_width: int = 4096,
    fc_kernel: int = 7,
    unpool_mode: str = "max_unpool",
):
    """DeconvNet: inputs must give a pool5 map of at least ``fc_kernel`` pixels (224 x 224 for the paper's 7)."""
    return UnpoolingDecoderNet(in_channels, num_classes, widths, unpool_mode, fc_width, fc_kernel, transposed=True)


def segnet(in_channels: int, num_classes: int, widths=VGG16_WIDTHS, unpool_mode: str = "max_unpool"):
    """SegNet: VGG16's 13 convolutions, a mirrored decoder, a 3x3 classifier."""
    return UnpoolingDecoderNet(in_channels, num_classes, widths, unpool_mode, None, 0, transposed=False)
