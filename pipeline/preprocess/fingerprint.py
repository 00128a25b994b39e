"""Dataset fingerprint (nnU-Net style): spacings, shapes, foreground intensities and class fractions of the training cases."""

from __future__ import annotations

import numpy as np

from pipeline.config import CheckSettings
from pipeline.data.header import DEFAULT_CHECKS
from pipeline.data.layout import Case, Dataset
from pipeline.errors import DatasetError, Problem
from pipeline.parallel import CaseJob, map_cases, split_outcomes
from pipeline.preprocess.geometry import crop_box, ras_spacing, reorient_to_ras
from pipeline.preprocess.intensity import (
    IntensityStats,
    channel_foreground,
    class_moments,
    class_separation,
    foreground_mask,
    normalise_mr,
)
from pipeline.preprocess.reading import read_case
from pipeline.qa.gate import scan_statistics


def case_fingerprint(
    case: Case,
    declared: set[int],
    samples: int,
    seed: int,
    body_threshold: float,
    is_ct: bool = True,
    margin_mm: float = 0.0,
    checks: CheckSettings = DEFAULT_CHECKS,
    bias_probe: bool = False,
) -> dict:
    """Read one case; return its RAS spacing, shape, shape after cropping to the body, class voxel counts and sampled
    foreground intensities; with ``bias_probe`` (labelled non-CT cases), also :func:`bias_probe_moments`.

    Cases without a label contribute body voxels (:func:`foreground_mask`) instead.

    Raises:
        InvalidInputError: as :func:`pipeline.preprocess.reading.read_case`.
    """
    image, affine, label = read_case(case, declared, checks)
    body = foreground_mask(image, is_ct, body_threshold)
    ras_body = reorient_to_ras(body | (label > 0) if label is not None else body, affine)[0]
    spacing = ras_spacing(affine)
    start, stop = crop_box(ras_body, spacing, margin_mm)
    result = {
        "case_id": case.case_id,
        "spacing": list(spacing),
        "shape": list(ras_body.shape),
        "shape_after_crop": [int(b - a) for a, b in zip(start, stop)],
        "scan": scan_statistics(image, spacing, (np.asarray(stop) - np.asarray(start)) * spacing),  # the input gate's
    }
    if bias_probe and label is not None and not is_ct:
        result["bias_probe"] = bias_probe_moments(image, label, affine, start, stop, max(declared) + 1)
    values = image[0]
    if label is not None:
        result["class_voxels"] = np.bincount(label.ravel(), minlength=max(declared) + 1).tolist()
        foreground = values[label > 0]
    else:
        foreground = values[body]
    if foreground.size == 0:
        foreground = values.ravel()
    rng = np.random.default_rng(seed)
    result["samples"] = rng.choice(foreground, size=min(samples, foreground.size), replace=False).astype(np.float32)
    return result


BIAS_PROBE_CASES = 16  # the bias probe runs N4 on at most this many labelled training cases (the first, in case order)


def bias_probe_moments(image: np.ndarray, label: np.ndarray, affine, start, stop, num_classes: int) -> dict:
    """Per channel, the class moments (:func:`pipeline.preprocess.intensity.class_moments`) of the channel normalised as
    preprocessing would (RAS, cropped, :func:`normalise_mr`) with and without N4, inside its foreground mask and the
    labelled voxels: ``{"none": [channel moments...], "n4": [...]}``."""
    ras = reorient_to_ras(np.moveaxis(image.astype(np.float32, copy=False), 0, -1), affine)[0]
    ras_label = reorient_to_ras(label, affine)[0]
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    cropped, labels = np.moveaxis(ras, -1, 0)[(slice(None), *box)], ras_label[box]
    spacing = ras_spacing(affine)
    moments: dict[str, list] = {"none": [], "n4": []}
    for channel in cropped:
        foreground = channel_foreground(channel)
        inside = foreground | (labels > 0)
        for scheme, corrected in (("none", False), ("n4", True)):
            normalised = normalise_mr(channel, spacing, bias_correction=corrected, mask=foreground)
            moments[scheme].append(class_moments(normalised, labels, inside, num_classes))
    return moments


def bias_correction_probe(per_case: list[dict], modalities) -> list[dict]:
    """Pool the cases' bias-probe moments: per channel (in order), its name, the class separation without and with N4,
    and the number of cases probed; empty when no case was probed."""
    probed = [c["bias_probe"] for c in per_case if "bias_probe" in c]
    if not probed:
        return []
    return [
        {"channel": channel, "cases": len(probed)}
        | {scheme: round(class_separation(np.sum([p[scheme][i] for p in probed], axis=0)), 6) for scheme in ("none", "n4")}
        for i, channel in enumerate(modalities)
    ]


def compute_fingerprint(
    dataset: Dataset,
    percentiles,
    samples: int,
    seed: int,
    body_threshold: float,
    num_workers: int,
    margin_mm: float = 0.0,
    checks: CheckSettings = DEFAULT_CHECKS,
) -> tuple[dict, list[Problem]]:
    """Fingerprint the training cases of ``dataset`` (or every case if none is labelled).

    Returns:
        (fingerprint, problems): a JSON-ready dict with per-case spacing/shape, median spacing, class
        voxel fractions and foreground intensity statistics; and one problem per unreadable case.

    Raises:
        DatasetError: when no case at all could be read.
    """
    cases = dataset.split("train") or list(dataset.cases)
    declared = set(dataset.labels.values)
    probed = {c.case_id for c in [c for c in cases if c.label is not None][:BIAS_PROBE_CASES]} if not dataset.is_ct else set()
    jobs = [
        CaseJob(
            c.case_id,
            c.images[0],
            (c, declared, samples, seed + i, body_threshold, dataset.is_ct, margin_mm, checks, c.case_id in probed),
        )
        for i, c in enumerate(cases)
    ]
    per_case, problems = split_outcomes(map_cases(case_fingerprint, jobs, num_workers))
    if not per_case:
        raise DatasetError(problems, "no case could be read for the fingerprint")
    return _summarise(dataset, per_case, percentiles), problems


def _summarise(dataset: Dataset, per_case: list[dict], percentiles) -> dict:
    n_classes = dataset.labels.num_classes
    stats = IntensityStats.from_samples(np.concatenate([c.pop("samples") for c in per_case]), percentiles)
    totals = np.sum([c.get("class_voxels", [0] * n_classes) for c in per_case], axis=0)
    spacings = np.array([c["spacing"] for c in per_case])
    return {
        "num_cases": len(per_case),
        "modalities": list(dataset.modalities),
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "spacing_min": spacings.min(axis=0).tolist(),
        "spacing_max": spacings.max(axis=0).tolist(),
        "class_voxel_fraction": {
            label.name: float(totals[label.value] / max(totals.sum(), 1)) for label in dataset.labels.labels
        },
        "intensity": stats.__dict__,
        "intensity_source": "foreground" if any("class_voxels" in c for c in per_case) else "body",
        **({} if dataset.is_ct else {"bias_correction_probe": bias_correction_probe(per_case, dataset.modalities)}),
        "cases": [{k: v for k, v in c.items() if k != "bias_probe"} for c in per_case],
    }
