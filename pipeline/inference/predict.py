"""One scan in, one label map out, on the scan's own grid.

For each model of the ensemble: preprocess the scan with that model's plan (reorient, crop,
normalise, resample), predict class probabilities with a sliding window (optionally mirrored),
and map the probabilities back through the inverse of preprocessing onto the original grid.
The ensemble averages probabilities there; only then is the argmax taken, then optional
largest-connected-component postprocessing per organ. When all models share one preprocessed
grid (the usual case) the argmax of the restored probabilities is computed by the exact
shortcut of :func:`restore_argmax`, which interpolates only near class boundaries.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from pipeline.config import InferSettings
from pipeline.data.labels import LabelRegistry
from pipeline.devices import amp_dtype_for, pick_device
from pipeline.inference.bundle import ModelBundle, check_compatible, load_bundle
from pipeline.inference.sliding import predict_volume_mirrored
from pipeline.preprocess.geometry import restore_argmax, restore_probabilities
from pipeline.preprocess.run import transform_case


@dataclass(frozen=True)
class Predictor:
    """An ensemble of loaded models and how to run them."""

    bundles: tuple[ModelBundle, ...]
    settings: InferSettings
    device: torch.device  # where windows run
    stitch_device: torch.device  # where windows are blended
    amp_dtype: torch.dtype | None

    @property
    def labels(self) -> LabelRegistry:
        return self.bundles[0].labels


def load_predictor(settings: InferSettings) -> Predictor:
    """Load every model folder of ``settings.models`` and pick devices.

    Raises:
        InvalidInputError: a model folder cannot be loaded, or the models disagree on labels/modalities.
        ConfigError: ``cuda`` requested without a GPU.
    """
    device = pick_device(settings.device, key="infer.device")
    stitch = device if settings.stitch_device == "auto" else pick_device(settings.stitch_device, key="infer.stitch_device")
    bundles = [load_bundle(folder, device) for folder in settings.models]
    check_compatible(bundles)
    return Predictor(tuple(bundles), settings, device, stitch, amp_dtype_for(settings.amp, device))


def predict_scan(predictor: Predictor, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Segment one scan.

    Args:
        predictor: the loaded ensemble.
        image: float32 (C, x, y, z) in scanner units, channels as the models were trained on.
        affine: the scan's RAS+ affine.

    Returns:
        uint8 (or uint16 above 255 classes) label map with the scan's spatial shape (x, y, z).
    """
    records, coarse = [], []
    for bundle in predictor.bundles:
        record, prepared, _ = transform_case(image, affine, None, bundle.plan)
        records.append(record)
        coarse.append(predict_probabilities(predictor, bundle, prepared))
    if all(r.to_json() == records[0].to_json() for r in records) and predictor.labels.num_classes <= 256:
        # one shared grid: average there (interpolation is linear, so this equals averaging after it)
        label = restore_argmax(sum(coarse) / len(coarse), records[0])
    else:
        summed = None
        for record, probabilities in zip(records, coarse):
            summed = restore_probabilities(probabilities, record, summed)
        label = summed.argmax(axis=0).astype(np.uint8 if predictor.labels.num_classes <= 256 else np.uint16)
    return keep_largest_components(label, predictor.labels, predictor.settings.largest_component)


def predict_probabilities(predictor: Predictor, bundle: ModelBundle, prepared: np.ndarray) -> np.ndarray:
    """Class probabilities (C, x, y, z) of one model on a preprocessed image (C_in, x, y, z), as numpy on the CPU."""
    tensor = torch.as_tensor(prepared, dtype=torch.float32, device=predictor.stitch_device)
    probabilities = predict_volume_mirrored(
        bundle.network,
        tensor,
        predictor.settings.mirror_axes,
        patch_size=bundle.patch_size,
        context_slices=bundle.context_slices,
        overlap=predictor.settings.overlap,
        autocast_dtype=predictor.amp_dtype,
        sw_batch_size=predictor.settings.sw_batch_size,
        sw_device=predictor.device,
    )
    return probabilities.cpu().numpy()


def keep_largest_components(label: np.ndarray, registry: LabelRegistry, organs: tuple[str, ...]) -> np.ndarray:
    """Keep only the largest 3D connected component (26-connectivity) of each named organ; the rest becomes background.

    (scipy's ``ndimage.label``; MONAI's ``KeepLargestConnectedComponent`` needs scikit-image, which we do not install.)
    Organ names absent from ``registry`` are skipped with a warning (the default names liver and
    spleen; a dataset without them is not an error). Paired organs (kidneys) should not be listed.
    """
    by_name = {lab.name.lower(): lab.value for lab in registry.foreground()}
    values = [by_name[name.lower()] for name in organs if name.lower() in by_name]
    unknown = [name for name in organs if name.lower() not in by_name]
    if unknown:
        print(f"warning: infer.largest_component: {unknown} not among the labels {sorted(by_name)}; skipped", file=sys.stderr)
    if not values:
        return label
    out = label.copy()
    for value in values:
        mask = label == value
        if not mask.any():
            continue
        box = ndimage.find_objects(mask.view(np.uint8))[0]  # work inside the organ's bounding box only
        components, count = ndimage.label(mask[box], structure=np.ones((3, 3, 3), dtype=bool))
        if count > 1:
            largest = int(np.bincount(components.ravel())[1:].argmax()) + 1
            out[box][(components > 0) & (components != largest)] = 0
    return out
