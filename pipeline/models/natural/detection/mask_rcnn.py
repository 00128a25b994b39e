"""Mask R-CNN (He et al., 2017): ResNet + FPN (P2-P6), region proposals, RoIAlign, box and mask heads.

Built from MONAI's detection pieces (``FeaturePyramidNetwork``, ``AnchorGenerator``, ``BoxCoder``,
``box_iou``) and our own ResNet, heads, RoIAlign and NMS (equal to MONAI's, 20x faster); torchvision does not load with
our torch. Settings are the paper's (``MaskRCNNSettings``): anchors 32-512 px at ratios 0.5/1/2 on
P2-P6, 256 anchors per image at 1:1 with IoU 0.7/0.3, 512 RoIs per image at 1:3, 7x7 RoIs for the box
head, 14x14 for the mask head with 28x28 per-class sigmoid masks trained on the ground-truth class.
Differences from the paper: images are used at their own size (no 800-px rescaling), padded to a
multiple of 32; BatchNorm trains (there are no ImageNet weights to freeze).

Boxes are ``(a0_min, a1_min, a0_max, a1_max)`` in the input tensor's axis order (see ``roi_align``).
Training: ``model(images, targets)`` returns the five losses; evaluation: ``model(images)`` returns one
:class:`Detections` per image.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.apps.detection.utils.anchor_utils import AnchorGenerator
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.data.box_utils import clip_boxes_to_image
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torch import nn

from pipeline.config.models import MaskRCNNSettings
from pipeline.data.instances import Instances
from pipeline.models.natural.detection.heads import (
    BoxHead,
    MaskHead,
    RPNHead,
    box_regression_loss,
    match,
    nms,
    sample,
)
from pipeline.models.natural.detection.roi_align import multiscale_roi_align, roi_align
from pipeline.models.natural.resnet import DilatedResNet

MIN_BOX_SIZE = 1e-3  # proposals smaller than this (pixels) are dropped, as in torchvision


@dataclass
class Detections:
    """One image's detections: boxes (N, 4), classes (N,), scores (N,), mask probabilities (N, A0, A1)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor

    def instances(self, threshold: float) -> Instances:
        """The detections as :class:`Instances` with masks thresholded at ``threshold``."""
        return Instances(self.boxes, self.labels, self.masks >= threshold)


class MaskRCNN(nn.Module):
    """Mask R-CNN for ``num_classes`` classes, background included (class 0)."""

    def __init__(self, settings: MaskRCNNSettings, in_channels: int, num_classes: int):
        super().__init__()
        self.settings, self.num_classes = settings, num_classes
        self.backbone = DilatedResNet(in_channels, settings.depth, settings.width, output_stride=32)
        self.fpn = FeaturePyramidNetwork(2, self.backbone.stage_channels, settings.fpn_channels, LastLevelMaxPool(2))
        self.anchors = AnchorGenerator(tuple((size,) for size in settings.anchor_sizes), (settings.aspect_ratios,) * 5)
        self.rpn = RPNHead(settings.fpn_channels, len(settings.aspect_ratios))
        self.box_head = BoxHead(settings.fpn_channels, settings.box_pool, settings.box_head_width, num_classes)
        self.mask_head = MaskHead(settings.fpn_channels, settings.mask_head_channels, settings.mask_head_convs, num_classes)
        self.rpn_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.roi_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))

    def forward(self, images: torch.Tensor, targets: list[Instances] | None = None) -> dict[str, torch.Tensor] | list[Detections]:
        """Losses (training, ``targets`` given) or detections (evaluation) for ``images`` (B, C, A0, A1)."""
        size = tuple(images.shape[-2:])
        padded = F.pad(images, [0, (-size[1]) % 32, 0, (-size[0]) % 32])
        stages = self.backbone.stage_features(padded)
        pyramid = list(self.fpn(OrderedDict((f"c{i + 2}", x) for i, x in enumerate(stages))).values())
        logits, deltas, counts = self.rpn(pyramid)
        # boxes stay float32 under autocast (bf16 holds 256-512 px coordinates only to a pixel or two)
        anchors = self.anchors(padded, [torch.empty(1, 1, *p.shape[-2:], device=p.device) for p in pyramid])[0]
        proposals = self._proposals(logits.detach().float(), deltas.detach().float(), anchors, counts, size)
        roi_levels = pyramid[:4]  # RoIs are pooled from P2-P5; P6 serves the RPN only
        if self.training:
            if targets is None:
                raise ValueError("training Mask R-CNN needs targets (one Instances per image)")
            losses = self._rpn_losses(logits, deltas, anchors, targets)
            losses.update(self._roi_losses(roi_levels, proposals, targets, tuple(padded.shape[-2:])))
            return losses
        return self._detect(roi_levels, proposals, size, tuple(padded.shape[-2:]))

    # --- region proposals -------------------------------------------------------------------------------------------

    def _proposals(self, logits, deltas, anchors, counts, size) -> list[torch.Tensor]:
        """Per image: the top-scoring decoded anchors of each level, clipped, NMS'd per level, capped in number."""
        pre_nms, post_nms = (self.settings.rpn_pre_nms, self.settings.rpn_post_nms)
        pre_nms, post_nms = (pre_nms[0], post_nms[0]) if self.training else (pre_nms[1], post_nms[1])
        level = torch.cat([torch.full((n,), i, dtype=torch.int64, device=logits.device) for i, n in enumerate(counts)])
        proposals = []
        for image_logits, image_deltas in zip(logits, deltas):
            keep = torch.cat([
                start + chunk.topk(min(pre_nms, len(chunk))).indices
                for start, chunk in zip(_starts(counts), image_logits.split(counts))
            ])  # fmt: skip
            boxes = _clip_to_image(self.rpn_coder.decode_single(image_deltas[keep], anchors[keep]), size)
            scores, levels = image_logits[keep], level[keep]
            large = ((boxes[:, 2:] - boxes[:, :2]) >= MIN_BOX_SIZE).all(1)
            boxes, scores, levels = boxes[large], scores[large], levels[large]
            chosen = nms(boxes, scores, self.settings.rpn_nms, levels, post_nms)
            proposals.append(boxes[chosen])
        return proposals

    def _rpn_losses(self, logits, deltas, anchors, targets) -> dict[str, torch.Tensor]:
        """Objectness (binary cross-entropy) and box (smooth L1) losses on ``rpn_batch_per_image`` anchors per image."""
        low, high = self.settings.rpn_iou
        chosen_logits, chosen_labels, box_predictions, box_targets = [], [], [], []
        for image_logits, image_deltas, target in zip(logits, deltas, targets):
            matches = match(target.boxes, anchors, low, high, low_quality=True)
            positive, negative = sample(matches, self.settings.rpn_batch_per_image, self.settings.rpn_positive_fraction)
            chosen_logits.append(image_logits[torch.cat([positive, negative])])
            chosen_labels.append(torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).to(logits))
            box_predictions.append(image_deltas[positive])
            box_targets.append(self.rpn_coder.encode_single(target.boxes[matches[positive]], anchors[positive]))
        labels = torch.cat(chosen_labels)
        return {
            "loss_objectness": F.binary_cross_entropy_with_logits(torch.cat(chosen_logits), labels),
            "loss_rpn_box": box_regression_loss(torch.cat(box_predictions), torch.cat(box_targets), len(labels)),
        }

    # --- box and mask heads -----------------------------------------------------------------------------------------

    def _roi_losses(self, pyramid, proposals, targets, padded_size) -> dict[str, torch.Tensor]:
        """Classification, box and mask losses on ``roi_batch_per_image`` RoIs per image (ground truth included)."""
        s = self.settings
        rois, labels, regression, mask_targets, positives = [], [], [], [], []
        for boxes, target in zip(proposals, targets):
            boxes = torch.cat([boxes, target.boxes])
            matches = match(target.boxes, boxes, s.roi_iou, s.roi_iou, low_quality=False)
            positive, negative = sample(matches, s.roi_batch_per_image, s.roi_positive_fraction)
            chosen, gt = torch.cat([positive, negative]), matches[positive]
            rois.append(boxes[chosen])
            labels.append(torch.cat([target.labels[gt], torch.zeros(len(negative), dtype=torch.int64, device=boxes.device)]))
            regression.append(self.roi_coder.encode_single(target.boxes[gt], boxes[positive]))
            mask_targets.append(self._mask_targets(target.masks, gt, boxes[positive]))
            positives.append(len(positive))
        labels_all = torch.cat(labels)
        class_logits, box_deltas = self.box_head(
            multiscale_roi_align(pyramid, rois, s.box_pool, padded_size, s.sampling_ratio, s.aligned)
        )
        foreground = (labels_all > 0).nonzero().flatten()
        per_class = box_deltas.view(len(labels_all), -1, 4)[foreground, labels_all[foreground]]
        losses = {
            "loss_classifier": F.cross_entropy(class_logits, labels_all),
            "loss_box": box_regression_loss(per_class, torch.cat(regression), len(labels_all)),
        }
        positive_rois = [r[:n] for r, n in zip(rois, positives)]
        positive_labels = torch.cat([lab[:n] for lab, n in zip(labels, positives)])
        if len(positive_labels) == 0:
            empty = pyramid[0].new_zeros(0, pyramid[0].shape[1], s.mask_pool, s.mask_pool)
            losses["loss_mask"] = self.mask_head(empty).sum()  # 0, with every mask-head parameter in the graph (DDP)
            return losses
        mask_logits = self.mask_head(
            multiscale_roi_align(pyramid, positive_rois, s.mask_pool, padded_size, s.sampling_ratio, s.aligned)
        )
        chosen_logits = mask_logits[torch.arange(len(positive_labels)), positive_labels]
        losses["loss_mask"] = F.binary_cross_entropy_with_logits(chosen_logits, torch.cat(mask_targets))
        return losses

    def _mask_targets(self, masks: torch.Tensor, gt: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Each positive RoI's ground-truth mask, RoIAligned to the mask head's output size (soft values in [0, 1])."""
        side = 2 * self.settings.mask_pool
        if len(gt) == 0:
            return masks.new_zeros((0, side, side), dtype=torch.float32)
        pooled = roi_align(masks[:, None].float(), boxes, gt, side, 1.0, self.settings.sampling_ratio, self.settings.aligned)
        return pooled[:, 0]

    @torch.no_grad()
    def _detect(self, pyramid, proposals, size, padded_size) -> list[Detections]:
        """Score, decode, threshold and NMS the proposals per class; predict and paste each detection's mask."""
        s = self.settings
        class_logits, box_deltas = self.box_head(
            multiscale_roi_align(pyramid, proposals, s.box_pool, padded_size, s.sampling_ratio, s.aligned)
        )
        scores_all = F.softmax(class_logits.float(), -1).split([len(p) for p in proposals])
        deltas_all = box_deltas.float().split([len(p) for p in proposals])
        detections = []
        for boxes, scores, deltas in zip(proposals, scores_all, deltas_all):
            count, classes = len(boxes), self.num_classes
            decoded = _clip_to_image(self.roi_coder.decode_single(deltas, boxes).view(count * classes, 4), size)
            labels = torch.arange(classes, device=boxes.device).repeat(count)
            scores = scores.reshape(-1)
            keep = (labels > 0) & (scores > s.score_threshold) & ((decoded[:, 2:] - decoded[:, :2]) >= 1e-2).all(1)
            decoded, labels, scores = decoded[keep], labels[keep], scores[keep]
            chosen = nms(decoded, scores, s.box_nms, labels, s.detections_per_image)
            detections.append(Detections(decoded[chosen], labels[chosen], scores[chosen], None))
        self._add_masks(pyramid, detections, size, padded_size)
        return detections

    def _add_masks(self, pyramid, detections: list[Detections], size, padded_size) -> None:
        s = self.settings
        boxes = [d.boxes for d in detections]
        if sum(len(b) for b in boxes):
            logits = self.mask_head(multiscale_roi_align(pyramid, boxes, s.mask_pool, padded_size, s.sampling_ratio, s.aligned))
        else:
            logits = pyramid[0].new_zeros(0, self.num_classes, 2 * s.mask_pool, 2 * s.mask_pool)
        for detection, chunk in zip(detections, logits.split([len(b) for b in boxes])):
            probabilities = torch.sigmoid(chunk[torch.arange(len(chunk)), detection.labels].float())
            detection.masks = paste_masks(probabilities, detection.boxes, size)


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample each (M, M) mask into its box on an image of ``size``: bilinear, zero outside the box.

    Pixel ``i``'s centre ``i + 0.5`` maps to ``(i + 0.5 - box_min) / box_size`` of the mask's extent; between the
    outermost mask-pixel centres and the box edge the edge value holds; a pixel whose centre is outside the box is 0.
    """
    out = masks.new_zeros((len(masks), *size))
    for index, (mask, box) in enumerate(zip(masks, boxes)):
        low = box[:2].floor().clamp_min(0).long().tolist()
        high = [min(int(math.ceil(float(box[2 + axis]))), size[axis]) for axis in range(2)]
        if high[0] <= low[0] or high[1] <= low[1]:
            continue
        centres = [torch.arange(low[a], high[a], dtype=masks.dtype, device=masks.device) + 0.5 for a in range(2)]
        relative = [2 * (centres[a] - box[a]) / (box[2 + a] - box[a]).clamp_min(1e-6) - 1 for a in range(2)]
        grid = torch.stack(torch.broadcast_tensors(relative[1][None, :], relative[0][:, None]), -1)
        sampled = F.grid_sample(mask[None, None], grid[None], align_corners=False, padding_mode="border")[0, 0]
        inside = (relative[0].abs() <= 1)[:, None] & (relative[1].abs() <= 1)[None, :]  # pixel centre within the box
        out[index, low[0] : high[0], low[1] : high[1]] = sampled * inside
    return out


def _clip_to_image(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Boxes clamped to the image (MONAI's rule); empty ones are kept here and dropped by the callers' size checks."""
    return clip_boxes_to_image(boxes, size, remove_empty=False)[0]


def _starts(counts: list[int]) -> list[int]:
    return [sum(counts[:i]) for i in range(len(counts))]
