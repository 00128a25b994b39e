"""Mask R-CNN's learned heads (RPN, box, mask) and the rules that turn ground truth into their targets.

Matching and sampling follow Faster/Mask R-CNN as torchvision implements them: an anchor or RoI
is foreground from IoU ``high``, background below ``low`` and ignored in between; the RPN also
makes each ground-truth box's best anchors foreground ("low-quality matches"), so that no object
goes unmatched. Sampling draws from the global torch generator, which the engine seeds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.data.box_utils import box_iou
from torch import nn

IGNORED, BACKGROUND = -2, -1


class RPNHead(nn.Module):
    """A shared 3x3 convolution, then per anchor an objectness logit and four box deltas, on every pyramid level."""

    def __init__(self, channels: int, anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, anchors, 1)
        self.deltas = nn.Conv2d(channels, anchors * 4, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, pyramid: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Objectness (B, total anchors) and deltas (B, total anchors, 4), ordered position-major then anchor as MONAI's
        ``AnchorGenerator`` orders its anchors; plus the anchor count of each level."""
        logits, deltas, counts = [], [], []
        for features in pyramid:
            hidden = F.relu(self.conv(features))
            score, delta = self.objectness(hidden), self.deltas(hidden)
            batch, anchors = score.shape[:2]
            logits.append(score.permute(0, 2, 3, 1).reshape(batch, -1))
            deltas.append(delta.view(batch, anchors, 4, *delta.shape[-2:]).permute(0, 3, 4, 1, 2).reshape(batch, -1, 4))
            counts.append(logits[-1].shape[1])
        return torch.cat(logits, 1), torch.cat(deltas, 1), counts


class BoxHead(nn.Module):
    """Two fully connected layers on the pooled RoI, then class scores and class-specific box deltas."""

    def __init__(self, channels: int, pool: int, width: int, num_classes: int):
        super().__init__()
        self.fc6 = nn.Linear(channels * pool * pool, width)
        self.fc7 = nn.Linear(width, width)
        self.cls_score = nn.Linear(width, num_classes)
        self.bbox_pred = nn.Linear(width, num_classes * 4)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = F.relu(self.fc7(F.relu(self.fc6(pooled.flatten(1)))))
        return self.cls_score(hidden), self.bbox_pred(hidden)


class MaskHead(nn.Module):
    """``convs`` 3x3 convolutions, a 2x2 transposed convolution (14 -> 28), and one mask logit map per class."""

    def __init__(self, in_channels: int, channels: int, convs: int, num_classes: int):
        super().__init__()
        layers, width = [], in_channels
        for _ in range(convs):
            layers += [nn.Conv2d(width, channels, 3, padding=1), nn.ReLU(inplace=True)]
            width = channels
        self.convs = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.logits = nn.Conv2d(channels, num_classes, 1)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.logits(F.relu(self.upsample(self.convs(pooled))))


def match(gt_boxes: torch.Tensor, boxes: torch.Tensor, low: float, high: float, low_quality: bool) -> torch.Tensor:
    """For each of ``boxes`` (M, 4): the index of its ground-truth box, ``BACKGROUND`` or ``IGNORED``.

    ``low_quality``: each ground-truth box's highest-IoU boxes are matched to it whatever the IoU (RPN rule).
    """
    if len(gt_boxes) == 0:
        return torch.full((len(boxes),), BACKGROUND, dtype=torch.int64, device=boxes.device)
    iou = box_iou(gt_boxes, boxes)  # (G, M)
    best, matched = iou.max(0)
    result = matched.clone()
    result[best < high] = IGNORED
    result[best < low] = BACKGROUND
    if low_quality:
        best_per_gt = iou.max(1, keepdim=True).values
        _, box_index = ((iou == best_per_gt) & (best_per_gt > 0)).nonzero(as_tuple=True)
        result[box_index] = matched[box_index]
    return result


def sample(matches: torch.Tensor, per_image: int, positive_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the sampled foreground and background boxes (at most ``per_image``, foreground at most its share)."""
    positive = (matches >= 0).nonzero().flatten()
    negative = (matches == BACKGROUND).nonzero().flatten()
    positives = min(len(positive), int(per_image * positive_fraction))
    negatives = min(len(negative), per_image - positives)
    positive = positive[torch.randperm(len(positive), device=matches.device)[:positives]]
    negative = negative[torch.randperm(len(negative), device=matches.device)[:negatives]]
    return positive, negative


def box_regression_loss(predicted: torch.Tensor, target: torch.Tensor, normaliser: int) -> torch.Tensor:
    """Smooth L1 (beta 1/9, as Detectron and torchvision) summed over coordinates, divided by ``normaliser``."""
    return F.smooth_l1_loss(predicted, target, beta=1 / 9, reduction="sum") / max(normaliser, 1)


def nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    threshold: float,
    groups: torch.Tensor | None = None,
    max_keep: int | None = None,
) -> torch.Tensor:
    """Greedy non-maximum suppression (per group when ``groups`` is given): indices kept, highest score first, at most
    ``max_keep``.

    The same result as ``monai.data.box_utils.non_max_suppression`` / ``batched_nms`` (a box is dropped when its IoU
    with a kept, higher-scoring box of its group exceeds ``threshold``; tested against them), computed blockwise with
    IoU matrices instead of a Python loop over boxes: MONAI's takes about 1.2 s for 5,000 proposals on 2 cores.
    """
    if groups is None:
        return _greedy_nms(boxes, scores, threshold, max_keep)
    kept = []
    for group in torch.unique(groups).tolist():
        members = (groups == group).nonzero().flatten()
        kept.append(members[_greedy_nms(boxes[members], scores[members], threshold, max_keep)])
    if not kept:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    kept = torch.cat(kept)
    return kept[scores[kept].argsort(descending=True, stable=True)][:max_keep]


NMS_BLOCK = 512  # boxes resolved together; earlier blocks' kept boxes suppress a block in one IoU matrix


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, max_keep: int | None) -> torch.Tensor:
    """Greedy NMS in score order, one block of boxes at a time. Within a block it is the fixed point of "keep a box
    unless a kept, higher-scoring box overlaps it": the iteration from "keep every box not suppressed by an earlier
    block" settles at least one more box per round, and its fixed point is the greedy result."""
    order = scores.argsort(descending=True, stable=True)
    ordered = boxes[order]
    kept_positions, kept_boxes = [], ordered[:0]
    for start in range(0, len(order), NMS_BLOCK):
        block = ordered[start : start + NMS_BLOCK]
        alive = torch.ones(len(block), dtype=torch.bool, device=boxes.device)
        if len(kept_boxes):
            alive &= ~(box_iou(kept_boxes, block) > threshold).any(0)
        overlaps = (box_iou(block, block) > threshold).triu(1)  # [j, i]: j scores higher than i and overlaps it
        keep = alive.clone()
        while True:
            updated = alive & ~(overlaps & keep[:, None]).any(0)
            if torch.equal(updated, keep):
                break
            keep = updated
        kept_positions.append(start + keep.nonzero().flatten())
        kept_boxes = torch.cat([kept_boxes, block[keep]])
        if max_keep is not None and len(kept_boxes) >= max_keep:
            break
    if not kept_positions:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    return order[torch.cat(kept_positions)][:max_keep]
