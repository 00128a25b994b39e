"""Dataset fingerprint (nnU-Net style): spacings, shapes, foreground intensities and class fractions of the training cases."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np

from pipeline.data.layout import Case, Dataset
from pipeline.data.nifti import read_nifti
from pipeline.preprocess.geometry import reorient_to_ras
from pipeline.preprocess.intensity import IntensityStats


def case_fingerprint(case: Case, num_classes: int, samples: int, seed: int, body_threshold: float) -> dict:
    """Read one labelled case; return its RAS spacing, shape, class voxel counts and sampled foreground intensities.

    Cases without foreground contribute body voxels (above ``body_threshold``) instead, flagged as such.
    """
    image = read_nifti(case.images[0], case.case_id)
    _, ras_affine, _ = reorient_to_ras(image.data, image.affine)
    result = {
        "case_id": case.case_id,
        "spacing": np.linalg.norm(ras_affine[:3, :3], axis=0).tolist(),
        "shape": list(image.data.shape[:3]),
    }
    values = image.data
    if case.label is not None:
        label = read_nifti(case.label, case.case_id).data
        counts = np.bincount(np.rint(label).astype(np.int64).ravel().clip(0), minlength=num_classes)[:num_classes]
        result["class_voxels"] = counts.tolist()
        foreground = values[label > 0]
    else:
        foreground = values[values > body_threshold]
    if foreground.size == 0:
        foreground = values.ravel()
    rng = np.random.default_rng(seed)
    result["samples"] = rng.choice(foreground, size=min(samples, foreground.size), replace=False).astype(np.float32)
    return result


def compute_fingerprint(dataset: Dataset, percentiles, samples: int, seed: int, body_threshold: float, num_workers: int) -> dict:
    """Fingerprint the training cases of ``dataset`` (or every case if none is labelled).

    Returns:
        A JSON-ready dict: per-case spacing/shape, median spacing, class voxel fractions and
        intensity statistics (mean, std, percentiles) of foreground voxels.
    """
    cases = dataset.split("train") or list(dataset.cases)
    n_classes = dataset.labels.num_classes
    jobs = [(c, n_classes, samples, seed + i, body_threshold) for i, c in enumerate(cases)]
    if num_workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            per_case = list(pool.map(_run, jobs))
    else:
        per_case = [_run(job) for job in jobs]
    all_samples = np.concatenate([c.pop("samples") for c in per_case])
    stats = IntensityStats.from_samples(all_samples, percentiles)
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
        "cases": per_case,
    }


def _run(job) -> dict:
    return case_fingerprint(*job)
