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

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import InferSettings
from pipeline.data.labels import LabelRegistry, label_dtype
from pipeline.devices import amp_dtype_for, pick_device
from pipeline.errors import ConfigError
from pipeline.inference.bundle import ModelBundle, check_compatible, load_bundle
from pipeline.inference.postprocess import PostprocessingDecision, apply_postprocessing
from pipeline.inference.sliding import predict_volume_mirrored
from pipeline.preprocess.geometry import restore_argmax, restore_probabilities
from pipeline.preprocess.run import transform_case

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictor:
    """An ensemble of loaded models and how to run them."""

    bundles: tuple[ModelBundle, ...]
    settings: InferSettings
    device: torch.device  # where windows run
    stitch_device: torch.device  # where windows are blended
    amp_dtype: torch.dtype | None
    decision: PostprocessingDecision | None = None  # cross-validation's, when the models came from decisions.json

    @property
    def labels(self) -> LabelRegistry:
        return self.bundles[0].labels


def load_predictor(settings: InferSettings, decisions: Path | None = None) -> Predictor:
    """Load every model folder of ``settings.models`` (``auto``: the models cross-validation chose, from ``decisions``)
    and pick devices.

    Raises:
        InvalidInputError: a model folder or the decisions cannot be loaded, or the models disagree on labels/modalities.
        ConfigError: ``cuda`` requested without a GPU.
    """
    device = pick_device(settings.device, key="infer.device")
    stitch = device if settings.stitch_device == "auto" else pick_device(settings.stitch_device, key="infer.stitch_device")
    decision, folders = None, settings.models
    if folders == "auto":
        from pipeline.crossval.decisions import read_decisions

        if decisions is None:
            raise ConfigError("infer.models=auto needs the cross-validation decisions file (crossval.decisions)")
        chosen = read_decisions(decisions)
        decision, folders = chosen.postprocessing_decision, chosen.models
        settings = settings.model_copy(update={"models": tuple(folders)})
    bundles = [load_bundle(folder, device) for folder in folders]
    check_compatible(bundles)
    return Predictor(tuple(bundles), settings, device, stitch, amp_dtype_for(settings.amp, device), decision)


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
    if all(r.to_json() == records[0].to_json() for r in records):
        # one shared grid: average there (interpolation is linear, so this equals averaging after it)
        label = restore_argmax(sum(coarse) / len(coarse), records[0])
    else:
        summed = None
        for record, probabilities in zip(records, coarse):
            summed = restore_probabilities(probabilities, record, summed)
        label = summed.argmax(axis=0).astype(label_dtype(predictor.labels.num_classes))
    return apply_postprocessing(label, postprocessing_for(predictor))


def restored_probabilities(predictor: Predictor, bundle: ModelBundle, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """One model's class probabilities (C, x, y, z) on the scan's own grid (cross-validation compares models there)."""
    record, prepared, _ = transform_case(image, affine, None, bundle.plan)
    return restore_probabilities(predict_probabilities(predictor, bundle, prepared), record)


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


def postprocessing_for(predictor: Predictor) -> PostprocessingDecision:
    """``infer.largest_component``: ``auto`` takes cross-validation's decision when the models came from it, else what
    every model of the ensemble decided on its held-out cases (foreground step if all chose it; the classes all chose);
    a list of class names applies to those classes."""
    chosen = predictor.settings.largest_component
    if chosen == "auto" and predictor.decision is not None:
        return predictor.decision
    if chosen == "auto":
        decisions = [b.postprocessing for b in predictor.bundles]
        classes = set.intersection(*(set(d.classes) for d in decisions))
        return PostprocessingDecision(all(d.foreground for d in decisions), tuple(sorted(classes)))
    by_name = {lab.name.lower(): lab.value for lab in predictor.labels.foreground()}
    unknown = [name for name in chosen if name.lower() not in by_name]
    if unknown:
        logger.warning("infer.largest_component: %s not among the labels %s; skipped", unknown, sorted(by_name))
    return PostprocessingDecision(False, tuple(by_name[n.lower()] for n in chosen if n.lower() in by_name))
