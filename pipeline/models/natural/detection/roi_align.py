"""RoIAlign (He et al., 2017) with ``grid_sample``, and the FPN paper's choice of pyramid level per RoI.

Boxes are ``(a0_min, a1_min, a0_max, a1_max)`` in the axis order of the feature tensor ``(N, C, A0, A1)``
(for the natural track's ``(3, x, y)`` arrays, that is ``(x1, y1, x2, y2)``), in input-pixel units with
pixel ``i`` covering ``[i, i + 1)``. The sampling rule is torchvision's ``roi_align``: each output bin
averages ``sampling_ratio``² bilinear samples at the centres of a regular sub-grid; a sample more than
one pixel outside the map counts as 0, one within a pixel of the edge takes the edge value;
``aligned=True`` shifts the box by half a pixel so that its corners fall on pixel corners (Detectron2's
correction); ``aligned=False`` keeps the paper's original rule and clamps a box to at least one pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def roi_align(
    features: torch.Tensor,
    boxes: torch.Tensor,
    batch_index: torch.Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> torch.Tensor:
    """Pool each box of ``boxes`` (K, 4) on image ``batch_index`` (K,) of ``features`` (N, C, A0, A1).

    Returns:
        (K, C, output_size, output_size).
    """
    count, channels = boxes.shape[0], features.shape[1]
    out = features.new_zeros(count, channels, output_size, output_size)
    if count == 0:
        return out
    points = _sample_points(boxes * spatial_scale - (0.5 if aligned else 0.0), output_size, sampling_ratio, aligned)
    size = torch.tensor(features.shape[-2:], dtype=points.dtype, device=points.device)
    valid = ((points >= -1.0) & (points <= size)).all(-1)  # (K, P, P, 2) -> (K, P, P)
    normalised = torch.where(size > 1, 2 * points / (size - 1).clamp_min(1) - 1, torch.zeros_like(points))
    grid = normalised.flip(-1)  # grid_sample wants (last axis, second-last axis)
    side = output_size * sampling_ratio
    for image in torch.unique(batch_index).tolist():
        rows = (batch_index == image).nonzero().flatten()
        sampled = F.grid_sample(
            features[image : image + 1], grid[rows].reshape(1, -1, side * side, 2), align_corners=True, padding_mode="border"
        )  # (1, C, k, side * side)
        sampled = sampled[0].reshape(channels, len(rows), side, side).transpose(0, 1)
        sampled = sampled * valid[rows][:, None].to(sampled.dtype)
        pooled = sampled.reshape(len(rows), channels, output_size, sampling_ratio, output_size, sampling_ratio).mean((3, 5))
        out[rows] = pooled.to(out.dtype)  # under autocast grid_sample computes in float32
    return out


def _sample_points(boxes: torch.Tensor, output_size: int, sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """Sample coordinates (K, P·s, P·s, 2) in feature-pixel units (axis 0, axis 1)."""
    start, end = boxes[:, :2], boxes[:, 2:]
    extent = end - start if aligned else (end - start).clamp_min(1.0)
    bin_size = extent / output_size  # (K, 2)
    steps = torch.arange(output_size * sampling_ratio, dtype=boxes.dtype, device=boxes.device)
    offsets = (steps // sampling_ratio) + ((steps % sampling_ratio) + 0.5) / sampling_ratio  # in bins
    along = start[:, None, :] + offsets[None, :, None] * bin_size[:, None, :]  # (K, P·s, 2)
    return torch.stack(torch.broadcast_tensors(along[:, :, None, 0], along[:, None, :, 1]), dim=-1)


def fpn_levels(
    boxes: torch.Tensor, min_level: int, max_level: int, canonical_scale: float = 224.0, canonical_level: int = 4
) -> torch.Tensor:
    """The FPN paper's level for each box (eq. 1): ``k = floor(k0 + log2(sqrt(w·h) / 224))``, clamped to the levels.

    Returns:
        Level numbers (K,), e.g. 2..5 for P2-P5.
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    level = torch.floor(canonical_level + torch.log2(area.clamp_min(1e-12).sqrt() / canonical_scale) + 1e-6)
    return level.clamp(min_level, max_level).to(torch.int64)


def multiscale_roi_align(
    pyramid: list[torch.Tensor],
    boxes: list[torch.Tensor],
    output_size: int,
    image_size: tuple[int, int],
    sampling_ratio: int = 2,
    aligned: bool = True,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
) -> torch.Tensor:
    """RoIAlign of each image's boxes on the pyramid level the FPN rule picks for it.

    Args:
        pyramid: feature maps of consecutive levels, finest first (e.g. P2-P5); a level's scale is read from its size.
        boxes: per image, (K_i, 4) boxes in input pixels.
        image_size: the (padded) input size, to tell each level's stride.

    Returns:
        (sum K_i, C, output_size, output_size), in the order of ``boxes``.
    """
    flat = torch.cat(boxes)
    batch_index = torch.cat([torch.full((len(b),), i, dtype=torch.int64, device=flat.device) for i, b in enumerate(boxes)])
    scales = [level.shape[-2] / image_size[0] for level in pyramid]
    first = round(-math.log2(scales[0]))
    levels = fpn_levels(flat, first, first + len(pyramid) - 1, canonical_scale, canonical_level) - first
    out = pyramid[0].new_zeros(len(flat), pyramid[0].shape[1], output_size, output_size)
    for index, (features, scale) in enumerate(zip(pyramid, scales)):
        rows = (levels == index).nonzero().flatten()
        if len(rows):
            out[rows] = roi_align(features, flat[rows], batch_index[rows], output_size, scale, sampling_ratio, aligned)
    return out
