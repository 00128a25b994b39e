"""Sliding-window prediction of class probabilities for a whole preprocessed volume.

3D models run MONAI's ``sliding_window_inference`` over (x, y, z) with Gaussian blending. 2D models
run it over batches of slices across their ``slice_axis`` (z: axial), each with its ``context`` neighbours
stacked as channels (zero outside the volume, exactly as in training).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.planning.planner import network_input_channels


@torch.no_grad()
def predict_volume(
    model: nn.Module,
    image: torch.Tensor,
    patch_size: tuple[int, ...],
    context_slices: int = 0,
    overlap: float = 0.25,
    slice_batch: int = 16,
    autocast_dtype: torch.dtype | None = None,
    sw_batch_size: int = 4,
    sw_device: torch.device | None = None,
    slice_axis: int = 2,
) -> torch.Tensor:
    """Predict softmax probabilities for one volume.

    Args:
        model: a 2D (``len(patch_size) == 2``) or 3D network returning logits.
        image: (C, x, y, z) tensor on the model's device.
        patch_size: the training patch size (window size).
        context_slices: 2.5D neighbours each side (2D models only).
        overlap: window overlap fraction.
        slice_batch: axial slices per forward batch (2D models).
        autocast_dtype: run the network under autocast with this dtype (GPU AMP), or ``None``.
        sw_batch_size: windows per forward pass.
        sw_device: where the windows run (the model's device); ``None`` = the image's device. Windows
            are blended on the image's device, so a CPU image with a GPU ``sw_device`` stitches on the CPU.
        slice_axis: the spatial axis 2D models slice across (0=x, 1=y, 2=z), as in training.

    Returns:
        (num_classes, x, y, z) float32 probabilities on the image's device.
    """
    from monai.inferers import sliding_window_inference

    sw_device = sw_device or image.device

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(sw_device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = sliding_window_inference(
                batch, patch_size, sw_batch_size, model, overlap, mode="gaussian", sw_device=sw_device, device=image.device
            )
        return torch.softmax(logits.float(), dim=1)

    if len(patch_size) == 3:
        return run(image[None])[0]
    if slice_axis != 2:  # the training data's order (training.data.in_slicing_order), and back
        moved = predict_volume(model, image.movedim(slice_axis + 1, -1), patch_size, context_slices, overlap, slice_batch,
                               autocast_dtype, sw_batch_size, sw_device)  # fmt: skip
        return moved.movedim(-1, slice_axis + 1)
    channels, _, _, depth = image.shape
    padded = nn.functional.pad(image, (context_slices, context_slices))
    outputs = []
    for start in range(0, depth, slice_batch):
        stop = min(start + slice_batch, depth)
        slabs = torch.stack([padded[..., z : z + 2 * context_slices + 1] for z in range(start, stop)])  # (B, C, x, y, k)
        in_channels = network_input_channels(channels, context_slices)
        slabs = slabs.permute(0, 1, 4, 2, 3).reshape(stop - start, in_channels, *image.shape[1:3])
        outputs.append(run(slabs))
    return torch.cat(outputs).permute(1, 2, 3, 0)


def predict_volume_mirrored(model: nn.Module, image: torch.Tensor, mirror_axes: tuple[int, ...], **kwargs) -> torch.Tensor:
    """Test-time mirroring: average :func:`predict_volume` over every combination of flips of ``mirror_axes``.

    Args:
        model, image: as for :func:`predict_volume` (image (C, x, y, z)).
        mirror_axes: spatial axes (0=x, 1=y, 2=z); empty = one plain prediction.
        **kwargs: passed to :func:`predict_volume`.

    Returns:
        (num_classes, x, y, z) probabilities averaged over 2 ** len(mirror_axes) predictions.
    """
    from itertools import combinations

    flips = [combo for n in range(len(mirror_axes) + 1) for combo in combinations(mirror_axes, n)]
    total = None
    for combo in flips:
        dims = [axis + 1 for axis in combo]
        flipped = torch.flip(image, dims) if dims else image
        probabilities = predict_volume(model, flipped, **kwargs)
        probabilities = torch.flip(probabilities, dims) if dims else probabilities
        total = probabilities if total is None else total + probabilities
    return total / len(flips)
