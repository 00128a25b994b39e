"""RoIAlign against values worked out by hand on a ramp (where bilinear sampling is exact) and against a direct
per-sample loop written from torchvision's rule; the FPN paper's level for each RoI."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.natural.detection.roi_align import fpn_levels, multiscale_roi_align, roi_align


def _ramp(size0: int = 12, size1: int = 10) -> torch.Tensor:
    """f[a0, a1] = 10 a0 + a1: bilinear interpolation of a linear function is exact."""
    a0, a1 = torch.meshgrid(torch.arange(size0, dtype=torch.float32), torch.arange(size1, dtype=torch.float32), indexing="ij")
    return (10 * a0 + a1)[None, None]


@pytest.mark.parametrize(
    ("aligned", "expected"),
    [
        # box (1, 2)-(5, 6), 2x2 bins of 2 px. aligned: bin centres at 1 - 0.5 + {1, 3} = {1.5, 3.5} and 2.5, 4.5.
        (True, [[17.5, 19.5], [37.5, 39.5]]),
        # not aligned: no half-pixel shift, centres at {2, 4} and {3, 5}.
        (False, [[23.0, 25.0], [43.0, 45.0]]),
    ],
)
def test_ramp_values_worked_out_by_hand(aligned, expected):
    pooled = roi_align(_ramp(), torch.tensor([[1.0, 2.0, 5.0, 6.0]]), torch.tensor([0]), 2, 1.0, 2, aligned)
    assert torch.allclose(pooled[0, 0], torch.tensor(expected), atol=1e-5)


def test_spatial_scale_maps_image_boxes_onto_a_coarser_level():
    # a stride-2 level: the image box (2, 4)-(10, 12) is the level box (1, 2)-(5, 6) of the first test
    pooled = roi_align(_ramp(), torch.tensor([[2.0, 4.0, 10.0, 12.0]]), torch.tensor([0]), 2, 0.5, 2, True)
    assert torch.allclose(pooled[0, 0], torch.tensor([[17.5, 19.5], [37.5, 39.5]]), atol=1e-5)


def _reference(features, boxes, batch_index, size, scale, ratio, aligned):
    """torchvision's roi_align rule, one sample at a time (input (N, C, A0, A1), boxes in (a0, a1) order)."""
    out = torch.zeros(len(boxes), features.shape[1], size, size)
    height, width = features.shape[-2:]
    for k, (box, image) in enumerate(zip(boxes.tolist(), batch_index.tolist())):
        shift = 0.5 if aligned else 0.0
        s0, s1, e0, e1 = (v * scale - shift for v in box)
        extent0, extent1 = (e0 - s0, e1 - s1) if aligned else (max(e0 - s0, 1.0), max(e1 - s1, 1.0))
        for p0 in range(size):
            for p1 in range(size):
                total = torch.zeros(features.shape[1])
                for i0 in range(ratio):
                    for i1 in range(ratio):
                        y = s0 + p0 * extent0 / size + (i0 + 0.5) * extent0 / size / ratio
                        x = s1 + p1 * extent1 / size + (i1 + 0.5) * extent1 / size / ratio
                        if y < -1 or y > height or x < -1 or x > width:
                            continue
                        y, x = max(y, 0.0), max(x, 0.0)
                        y0, x0 = min(int(y), height - 1), min(int(x), width - 1)
                        y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
                        y, x = (float(y0) if y0 == height - 1 else y), (float(x0) if x0 == width - 1 else x)
                        ly, lx = y - y0, x - x0
                        f = features[image]
                        total += (1 - ly) * (1 - lx) * f[:, y0, x0] + (1 - ly) * lx * f[:, y0, x1]
                        total += ly * (1 - lx) * f[:, y1, x0] + ly * lx * f[:, y1, x1]
                out[k, :, p0, p1] = total / ratio**2
    return out


@pytest.mark.parametrize("aligned", [True, False])
def test_matches_a_direct_per_sample_loop_for_several_boxes(aligned):
    torch.manual_seed(0)
    features = torch.randn(2, 3, 11, 13)
    boxes = torch.tensor([[1.0, 2.0, 9.0, 7.0], [-3.0, -2.0, 5.5, 4.0], [10.0, 8.0, 14.0, 12.0], [0.2, 0.3, 0.6, 0.9]])
    batch_index = torch.tensor([0, 1, 0, 1])
    for size, scale, ratio in ((5, 0.5, 2), (3, 1.0, 1), (4, 0.25, 3)):
        expected = _reference(features, boxes, batch_index, size, scale, ratio, aligned)
        assert torch.allclose(roi_align(features, boxes, batch_index, size, scale, ratio, aligned), expected, atol=1e-5)


def test_fpn_level_follows_the_papers_equation_and_clamps():
    sides = torch.tensor([224.0, 112.0, 448.0, 56.0, 20.0, 1000.0, 223.0])
    boxes = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], 1)
    assert fpn_levels(boxes, 2, 5).tolist() == [4, 3, 5, 2, 2, 5, 3]
    wide = torch.tensor([[0.0, 0.0, 448.0, 112.0]])  # sqrt(area) = 224
    assert fpn_levels(wide, 2, 5).tolist() == [4]


def test_multiscale_pools_each_box_from_its_level():
    torch.manual_seed(1)
    image_size = (256, 256)
    pyramid = [torch.randn(2, 4, 256 // s, 256 // s) for s in (4, 8, 16, 32)]
    boxes = [torch.tensor([[10.0, 10.0, 40.0, 40.0], [0.0, 0.0, 230.0, 230.0]]), torch.tensor([[5.0, 8.0, 125.0, 120.0]])]
    pooled = multiscale_roi_align(pyramid, boxes, 7, image_size, 2, True)
    # levels: sqrt(900) = 30 -> P2; 230 -> P4; ~116 -> P3
    expected = [
        roi_align(pyramid[0], boxes[0][:1], torch.tensor([0]), 7, 1 / 4),
        roi_align(pyramid[2], boxes[0][1:], torch.tensor([0]), 7, 1 / 16),
        roi_align(pyramid[1], boxes[1], torch.tensor([1]), 7, 1 / 8),
    ]
    assert torch.allclose(pooled, torch.cat(expected), atol=1e-6)
