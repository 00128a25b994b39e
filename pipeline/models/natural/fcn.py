"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer and Darrell, 2015) on a VGG16 backbone.

VGG16's fully connected layers become convolutions (fc6: 7x7, fc7: 1x1, dropout after each),
a 1x1 ``score`` layer gives class scores at stride 32, and learned upsampling (transposed
convolutions initialised to bilinear) brings them to the input size. FCN-16s and FCN-8s fuse
class scores of pool4 and pool3 by summation. 'Same' padding replaces the paper's 100-pixel pad and
crops; input sides must be multiples of 32.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.natural.blocks import VGG16_WIDTHS, Upsample, VGGEncoder

SKIPS = {"fcn32s": (), "fcn16s": (3,), "fcn8s": (3, 2)}  # pool4 (index 3), pool3 (index 2)


class FCN(nn.Module):
    """One FCN variant.

    Args:
        variant: ``fcn32s``, ``fcn16s`` or ``fcn8s``.
        in_channels, num_classes: image channels and classes.
        widths: VGG16 block widths; ``fc_width``: channels of fc6/fc7 (4096 in the paper).
        upsample: ``transposed`` (learned, as in the paper) or ``bilinear`` / ``nearest`` (fixed).
    """

    def __init__(
        self,
        variant: str,
        in_channels: int,
        num_classes: int,
        widths=VGG16_WIDTHS,
        fc_width: int = 4096,
        upsample: str = "transposed",
    ):
        super().__init__()
        self.skips = SKIPS[variant]
        self.encoder = VGGEncoder(in_channels, widths, batch_norm=False)
        self.fc = nn.Sequential(
            nn.Conv2d(widths[-1], fc_width, 7, padding=3),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
            nn.Conv2d(fc_width, fc_width, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.5),
        )
        self.score = nn.Conv2d(fc_width, num_classes, 1)
        self.score_skips = nn.ModuleList(nn.Conv2d(widths[i], num_classes, 1) for i in self.skips)
        self.up2 = nn.ModuleList(Upsample(num_classes, 2, upsample) for _ in self.skips)
        self.up_final = Upsample(num_classes, 32 // 2 ** len(self.skips), upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, _, _ = self.encoder(x)
        scores = self.score(self.fc(pooled[-1]))
        for skip, score_skip, up in zip(self.skips, self.score_skips, self.up2):
            scores = up(scores) + score_skip(pooled[skip])  # fuse by summation at stride 16, then 8
        return self.up_final(scores)
