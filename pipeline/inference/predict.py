"""One scan in, one label map out, on the scan's own grid.

For each model of the ensemble: preprocess the scan with that model's plan (reorient, crop,
normalise, resample), predict class probabilities with a sliding window (optionally mirrored),
and map the probabilities back through the inverse of preprocessing onto the original grid.
The ensemble averages probabilities there; only then is the argmax taken, then optional
largest-connected-component postprocessing per organ. When all models share one preprocessed
grid (the usual case) the argmax of the restored probabilities is computed by the exact
shortcut of :func:`restore_argmax`, which interpolates only near class boundaries.

:func:`segment_scan` adds what says how far to trust the mask: the input gate before any network runs
(:mod:`pipeline.qa.gate`), and per-voxel predictive entropy (of the probabilities after the ensemble's
temperature, :mod:`pipeline.qa.calibration`) and mutual information over the members (models x test-time
mirrors, :mod:`pipeline.qa.uncertainty`), both mapped to the scan's grid.
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
from pipeline.inference.postprocess import PostprocessingDecision, apply_postprocessing, common_postprocessing
from pipeline.inference.sliding import predict_volume
from pipeline.preprocess.geometry import restore_argmax, restore_probabilities, restore_scalar_map
from pipeline.preprocess.run import transform_case
from pipeline.qa.calibration import apply_temperature
from pipeline.qa.gate import GateResult, enforce, gate, scan_statistics
from pipeline.qa.uncertainty import MemberStats, entropy

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
    temperature: float = 1.0  # cross-validation's temperature of this ensemble (1 = as the networks say)

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
    decision, folders, temperature = None, settings.models, 1.0
    if folders == "auto":
        from pipeline.crossval.decisions import read_decisions

        if decisions is None:
            raise ConfigError("infer.models=auto needs the cross-validation decisions file (crossval.decisions)")
        chosen = read_decisions(decisions)
        decision, folders, temperature = chosen.postprocessing_decision, chosen.models, chosen.temperature
        settings = settings.model_copy(update={"models": tuple(folders)})
    bundles = [load_bundle(folder, device, settings.backend) for folder in folders]
    check_compatible(bundles)
    return Predictor(tuple(bundles), settings, device, stitch, amp_dtype_for(settings.amp, device), decision, temperature)


@dataclass(frozen=True)
class ScanPrediction:
    """One scan's mask, how far to trust it, and the input gate's verdict (all on the scan's own grid)."""

    label: np.ndarray
    gate: GateResult
    entropy: np.ndarray | None = None  # predictive entropy in nats (0 ... log C), after the temperature
    mutual_information: np.ndarray | None = None  # the members' disagreement (None when the models use different grids)
    probabilities: np.ndarray | None = None  # (C, x, y, z) ensemble mean before the temperature, when asked for


def segment_scan(
    predictor: Predictor,
    image: np.ndarray,
    affine: np.ndarray,
    source: Path | str = "scan",
    case: str | None = None,
    force: bool = False,
    uncertainty: bool = True,
    probabilities: bool = False,
) -> ScanPrediction:
    """Gate, segment and score one scan.

    Args:
        predictor: the loaded ensemble.
        image: float32 (C, x, y, z) in scanner units; affine: its RAS+ affine.
        source, case: named in the gate's error.
        force: segment a scan the gate refuses (the result records it).
        uncertainty: compute entropy and mutual information maps.
        probabilities: also return the restored ensemble probabilities (memory: C float32 volumes).

    Raises:
        InvalidInputError: the gate refuses the scan (row Q1) and ``force`` is off.
    """
    prepared = [transform_case(image, affine, None, bundle.plan)[:2] for bundle in predictor.bundles]
    records = [record for record, _ in prepared]
    verdict = enforce(gate_scan(predictor, image, records[0]), source, case, force)
    if not all(r.to_json() == records[0].to_json() for r in records):
        return _segment_on_several_grids(predictor, prepared, verdict, uncertainty, probabilities)
    stats = MemberStats()
    for bundle, (_, volume) in zip(predictor.bundles, prepared):
        for member in member_probabilities(predictor, bundle, volume):
            stats.add(member)
    record, mean = records[0], stats.mean
    label = apply_postprocessing(restore_argmax(mean, record), postprocessing_for(predictor))
    if not uncertainty:
        return ScanPrediction(label, verdict, probabilities=restore_probabilities(mean, record) if probabilities else None)
    entropy_map = restore_scalar_map(entropy(apply_temperature(mean, predictor.temperature)), record)
    information = restore_scalar_map(stats.mutual_information(), record)
    restored = restore_probabilities(mean, record) if probabilities else None
    return ScanPrediction(label, verdict, entropy_map, information, restored)


def _segment_on_several_grids(predictor, prepared, verdict: GateResult, uncertainty: bool, probabilities: bool):
    """Models on different grids: average the restored probabilities; no mutual information (members differ in grid)."""
    summed = None
    for bundle, (record, volume) in zip(predictor.bundles, prepared):
        summed = restore_probabilities(predict_probabilities(predictor, bundle, volume), record, summed)
    mean = summed / len(prepared)
    label = apply_postprocessing(
        mean.argmax(axis=0).astype(label_dtype(predictor.labels.num_classes)), postprocessing_for(predictor)
    )
    entropy_map = entropy(apply_temperature(mean, predictor.temperature)) if uncertainty else None
    return ScanPrediction(label, verdict, entropy_map, None, mean if probabilities else None)


def gate_scan(predictor: Predictor, image: np.ndarray, record) -> GateResult:
    """The input gate for one scan, against the first model's training envelope (``pass`` when it has none)."""
    envelope = predictor.bundles[0].envelope
    spacing = np.asarray(record.source_spacing, dtype=float)
    extent = (np.asarray(record.crop_stop) - np.asarray(record.crop_start)) * spacing
    statistics = scan_statistics(image, spacing, extent)
    if envelope is None:
        return GateResult(
            "pass", ("the model card has no training envelope (trained by an older segpipe): not gated",), statistics
        )
    return gate(statistics, envelope)


def member_probabilities(predictor: Predictor, bundle: ModelBundle, prepared: np.ndarray):
    """Yield one model's probabilities (C, x, y, z) for each test-time mirror: the ensemble's members."""
    from itertools import combinations

    axes = predictor.settings.mirror_axes
    tensor = torch.as_tensor(prepared, dtype=torch.float32, device=predictor.stitch_device)
    for flip in [combo for n in range(len(axes) + 1) for combo in combinations(axes, n)]:
        dims = [axis + 1 for axis in flip]
        output = predict_volume(
            bundle.network,
            torch.flip(tensor, dims) if dims else tensor,
            patch_size=bundle.patch_size,
            context_slices=bundle.context_slices,
            slice_axis=bundle.slice_axis,
            overlap=predictor.settings.overlap,
            autocast_dtype=predictor.amp_dtype,
            sw_batch_size=predictor.settings.sw_batch_size,
            sw_device=predictor.device,
        )
        yield (torch.flip(output, dims) if dims else output).cpu().numpy()


def predict_scan(predictor: Predictor, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Segment one scan.

    Args:
        predictor: the loaded ensemble.
        image: float32 (C, x, y, z) in scanner units, channels as the models were trained on.
        affine: the scan's RAS+ affine.

    Returns:
        uint8 (or uint16 above 255 classes) label map with the scan's spatial shape (x, y, z).

    Raises:
        InvalidInputError: the input gate refuses the scan (see :func:`segment_scan`).
    """
    return segment_scan(predictor, image, affine, uncertainty=False).label


def restored_probabilities(predictor: Predictor, bundle: ModelBundle, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """One model's class probabilities (C, x, y, z) on the scan's own grid (cross-validation compares models there)."""
    record, prepared, _ = transform_case(image, affine, None, bundle.plan)
    return restore_probabilities(predict_probabilities(predictor, bundle, prepared), record)


def predict_probabilities(predictor: Predictor, bundle: ModelBundle, prepared: np.ndarray) -> np.ndarray:
    """Class probabilities (C, x, y, z) of one model on a preprocessed image (C_in, x, y, z), averaged over its test-time
    mirrors, as numpy on the CPU."""
    total, members = None, 0
    for member in member_probabilities(predictor, bundle, prepared):
        total, members = (member if total is None else total + member), members + 1
    return total / members


def postprocessing_for(predictor: Predictor) -> PostprocessingDecision:
    """``infer.largest_component``: ``auto`` takes cross-validation's decision when the models came from it, else what
    every model of the ensemble decided alike on its held-out cases (:func:`common_postprocessing`); a list of class
    names keeps the largest component of those classes."""
    chosen = predictor.settings.largest_component
    if chosen == "auto" and predictor.decision is not None:
        return predictor.decision
    if chosen == "auto":
        return common_postprocessing([b.postprocessing for b in predictor.bundles])
    by_name = {lab.name.lower(): lab.value for lab in predictor.labels.foreground()}
    unknown = [name for name in chosen if name.lower() not in by_name]
    if unknown:
        logger.warning("infer.largest_component: %s not among the labels %s; skipped", unknown, sorted(by_name))
    return PostprocessingDecision(False, tuple(by_name[n.lower()] for n in chosen if n.lower() in by_name))
