"""Mask R-CNN's parts: anchors and box coding (MONAI), NMS, matching, mask pasting; the paper-size parameter count;
a few steps lower the loss; evaluation output lies on the image."""

from __future__ import annotations

import math

import pytest
import torch
from monai.apps.detection.utils.box_coder import BoxCoder
from monai.data.box_utils import batched_nms, non_max_suppression

from pipeline.config.models import MaskRCNNSettings
from pipeline.data.instances import instances_from_maps
from pipeline.models import build_model
from pipeline.models.natural.detection.heads import BACKGROUND, IGNORED, match, nms, sample
from pipeline.models.natural.detection.mask_rcnn import MaskRCNN, paste_masks

SMALL = {"depth": 18, "width": 8, "fpn_channels": 32, "box_head_width": 64, "mask_head_channels": 16}


def test_anchors_at_paper_settings_cover_32_to_512_px_at_three_ratios():
    model = MaskRCNN(MaskRCNNSettings(**SMALL), 3, 5)
    image = torch.zeros(1, 3, 256, 256)
    pyramid = [torch.zeros(1, 1, 256 // s, 256 // s) for s in (4, 8, 16, 32, 64)]
    anchors = model.anchors(image, pyramid)[0]
    counts = [3 * (256 // s) ** 2 for s in (4, 8, 16, 32, 64)]
    assert len(anchors) == sum(counts)
    start = 0
    for count, size in zip(counts, (32, 64, 128, 256, 512)):
        level = anchors[start : start + count]
        extent = level[:3, 2:] - level[:3, :2]
        assert torch.allclose(extent.prod(1).sqrt(), torch.full((3,), float(size)), rtol=0.03)  # area size² (rounded)
        ratios = sorted((extent[:, 1] / extent[:, 0]).tolist())
        assert ratios == pytest.approx([0.5, 1.0, 2.0], rel=0.1)  # MONAI rounds corners to whole pixels
        start += count


def test_box_coding_round_trips():
    torch.manual_seed(0)
    reference = torch.tensor([[10.0, 20.0, 50.0, 44.0], [0.0, 0.0, 8.0, 8.0], [100.0, 90.0, 300.0, 140.0]])
    truth = reference + torch.randn(3, 4) * 3
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        coder = BoxCoder(weights)
        assert torch.allclose(coder.decode_single(coder.encode_single(truth, reference), reference), truth, atol=1e-4)


def test_nms_keeps_the_expected_boxes_and_equals_monai():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # IoU(0, 1) = 81 / 119 = 0.68; IoU(3, 0) = 100 / 105 = 0.95; IoU(3, 1) = 85.5 / 119.5 = 0.72
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 0.7).tolist() == [3, 2]
    assert nms(boxes, scores, 0.75).tolist() == [3, 1, 2]  # box 1 is under 0.75 with box 3; box 0 (suppressed) no longer counts
    assert nms(boxes, scores, 0.5, torch.tensor([0, 1, 0, 0])).tolist() == [3, 1, 2]  # groups do not suppress each other
    torch.manual_seed(3)
    corner = torch.rand(400, 2) * 100
    random_boxes = torch.cat([corner, corner + torch.rand(400, 2) * 30 + 2], 1)
    random_scores, groups = torch.rand(400), torch.randint(0, 4, (400,))
    assert torch.equal(nms(random_boxes, random_scores, 0.5), non_max_suppression(random_boxes, random_scores, 0.5))
    assert torch.equal(nms(random_boxes, random_scores, 0.3, groups), batched_nms(random_boxes, random_scores, groups, 0.3))


def test_matching_thresholds_and_low_quality_matches():
    truth = torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]])
    boxes = torch.tensor([[0.0, 0, 10, 9], [0, 0, 10, 5], [0, 0, 20, 20], [48, 48, 64, 64]])
    # IoU with box 0: 0.9, 0.5, 0.25; the last box's best IoU is 100 / 256 = 0.39 (its ground truth's best)
    assert match(truth, boxes, 0.3, 0.7, low_quality=False).tolist() == [0, IGNORED, BACKGROUND, IGNORED]
    assert match(truth, boxes, 0.3, 0.7, low_quality=True).tolist() == [0, IGNORED, BACKGROUND, 1]
    torch.manual_seed(0)
    matches = torch.tensor([0] * 10 + [BACKGROUND] * 100 + [IGNORED] * 5)
    positive, negative = sample(matches, 16, 0.25)
    assert len(positive) == 4 and len(negative) == 12 and (matches[positive] >= 0).all() and (matches[negative] == -1).all()


def test_pasted_mask_fills_its_box_exactly():
    pasted = paste_masks(torch.ones(1, 28, 28), torch.tensor([[10.0, 20.0, 40.0, 50.0]]), (64, 60))
    expected = torch.zeros(64, 60)
    expected[10:40, 20:50] = 1
    assert torch.allclose(pasted[0], expected)
    half = torch.zeros(1, 28, 28)
    half[:, :14] = 1  # the first half along axis 0
    assert paste_masks(half, torch.tensor([[0.0, 0.0, 20.0, 10.0]]), (32, 32))[0, :, 5].gt(
        0.5
    ).nonzero().flatten().tolist() == list(range(10))


def test_parameter_count_at_paper_settings_is_within_two_percent_of_torchvision():
    model = build_model(MaskRCNNSettings(), 3, 91)
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters == pytest.approx(44.4e6, rel=0.02)  # torchvision maskrcnn_resnet50_fpn, 91 COCO classes


def _toy_batch():
    ids = torch.zeros(2, 96, 80, dtype=torch.int64)
    classes = torch.zeros_like(ids)
    ids[0, 10:40, 20:50], classes[0, 10:40, 20:50] = 1, 2
    ids[1, 50:90, 5:30], classes[1, 50:90, 5:30] = 3, 4
    ids[1, 5:20, 60:78], classes[1, 5:20, 60:78] = 4, 1
    images = torch.randn(2, 3, 96, 80) * 0.1 + (ids > 0).float()[:, None]
    return images, [instances_from_maps(i, c) for i, c in zip(ids, classes)]


def test_eight_steps_lower_the_loss_and_evaluation_returns_masks_on_the_image():
    torch.manual_seed(0)
    model = MaskRCNN(MaskRCNNSettings(**SMALL), 3, 5)
    images, targets = _toy_batch()
    optimiser = torch.optim.AdamW(model.parameters(), 1e-3)
    losses = []
    model.train()
    for _ in range(8):
        parts = model(images, targets)
        assert set(parts) == {"loss_objectness", "loss_rpn_box", "loss_classifier", "loss_box", "loss_mask"}
        loss = sum(parts.values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    model.eval()
    detections = model(images)
    assert len(detections) == 2
    for found in detections:
        assert found.masks.shape == (len(found.boxes), 96, 80) and len(found.boxes) <= 100
        assert ((found.boxes[:, 2:] <= torch.tensor([96.0, 80.0])) & (found.boxes[:, :2] >= 0)).all()
        assert (found.labels > 0).all() and (found.scores > 0.05).all()
        assert torch.equal(found.scores, found.scores.sort(descending=True).values)
        for mask, box in zip(found.masks, found.boxes):  # nothing pasted outside the (pixel-rounded) box
            outside = mask.clone()
            outside[math.floor(box[0]) : math.ceil(box[2]), math.floor(box[1]) : math.ceil(box[3])] = 0
            assert outside.abs().max() == 0


def test_an_image_without_objects_trains_on_background_only_and_reaches_every_parameter():
    torch.manual_seed(0)
    model = MaskRCNN(MaskRCNNSettings(**SMALL), 3, 5).train()
    empty = instances_from_maps(torch.zeros(64, 64, dtype=torch.int64), torch.zeros(64, 64, dtype=torch.int64))
    losses = model(torch.randn(1, 3, 64, 64), [empty])
    assert losses["loss_rpn_box"] == 0 and losses["loss_box"] == 0 and losses["loss_mask"] == 0
    assert losses["loss_objectness"] > 0 and losses["loss_classifier"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP needs every parameter in the graph


def test_bf16_autocast_keeps_boxes_and_losses_in_float32_and_close_to_float32():
    """The GPU default is bf16 autocast; CPU autocast exercises the same casts (bf16 would hold box coordinates of a
    512-px image only to a pixel or two, so boxes, anchors and losses stay float32)."""
    images, targets = _toy_batch()
    torch.manual_seed(0)
    model = MaskRCNN(MaskRCNNSettings(**SMALL), 3, 5).train()
    torch.manual_seed(5)
    reference = model(images, targets)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(images, targets)
    for name, value in mixed.items():
        assert value.dtype == torch.float32 and torch.isfinite(value)
        assert value.item() == pytest.approx(reference[name].item(), rel=0.1, abs=0.02), name
    sum(mixed.values()).backward()
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        detections = model(images)
    assert all(d.boxes.dtype == torch.float32 and d.masks.dtype == torch.float32 for d in detections)
