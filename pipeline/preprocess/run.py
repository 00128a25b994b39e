"""The ``preprocess`` stage: per case reorient -> crop -> normalise -> resample -> save, on every planned grid.

The plan (``segpipe plan``) fixes the target spacing of each grid and the normalisation. Outputs under
``preprocess.out_dir/<data identifier>/`` (``fullres``, shared by ``2d`` and ``3d_fullres``; ``lowres``
when ``3d_lowres`` is planned):
* ``cases/<case_id>/image.npy`` float32 (C, x, y, z), uncompressed so training can memory-map it;
* ``cases/<case_id>/label.npy`` uint8 (x, y, z) for labelled cases;
* ``cases/<case_id>/record.json``: geometry record (inverts everything), source digests, config digest;
* ``fingerprint.json`` and ``dataset.json`` (the manifest training reads).
Cases whose sources and settings are unchanged are skipped (resumable); all failures are collected.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.config import CheckSettings, PipelineConfig, PreprocessSettings
from pipeline.data.header import DEFAULT_CHECKS
from pipeline.data.layout import Case, Dataset, load_dataset
from pipeline.errors import DatasetError, Problem
from pipeline.io_utils import file_digest, save_npy_atomic, text_digest, write_json_atomic
from pipeline.parallel import CaseJob, map_cases, thread_map
from pipeline.planning.plans import Plans, read_plans
from pipeline.preprocess.geometry import (
    CaseGeometryRecord,
    crop_box,
    crop_resampled_affine,
    ras_spacing,
    reorient_to_ras,
    resample_labels,
    resample_linear,
    resample_volume,
    resampled_shape,
)
from pipeline.preprocess.intensity import IntensityStats, foreground_mask, normalise_ct, normalise_mr
from pipeline.preprocess.reading import read_case, stack_channels


@dataclass(frozen=True)
class Plan:
    """What every case needs to be preprocessed identically."""

    settings: PreprocessSettings
    target_spacing: tuple[float, float, float]
    stats: IntensityStats | None
    is_ct: bool
    declared_labels: frozenset[int]
    num_classes: int
    out_dir: Path
    digest: str
    checks: CheckSettings = field(default_factory=CheckSettings)
    bias_correction: tuple[bool, ...] = ()  # per channel: N4 before the z-score (MR-like channels of the plan)
    masked: tuple[bool, ...] = ()  # per channel: z-score in the foreground mask (empty = every non-CT channel)

    @classmethod
    def bias_correction_of(cls, normalisation) -> tuple[bool, ...]:
        """Per channel, whether the plan's normalisation corrects the bias field first."""
        return tuple(n.bias_correction == "n4" for n in normalisation)

    @classmethod
    def masked_of(cls, normalisation) -> tuple[bool, ...]:
        """Per channel, whether the plan's z-score (and the crop) uses the channel's foreground mask."""
        return tuple(n.mask == "foreground" for n in normalisation)


def preprocess_dataset(cfg: PipelineConfig) -> Path:
    """Run the preprocess stage for ``cfg.data.root`` on every grid of the plan (``cfg.plan.file``).

    Returns:
        Path of the full-resolution manifest (``<out_dir>/fullres/dataset.json``).

    Raises:
        InvalidInputError: no plan (run `segpipe plan`).
        DatasetError: missing files or any case that cannot be preprocessed (all listed).
    """
    settings = cfg.preprocess
    plans = read_plans(cfg.plan.file)
    dataset = load_dataset(cfg.data.root)
    cases = [c for c in dataset.cases if settings.include_unlabeled or c.split != "unlabeled"]
    grids = planned_grids(plans)
    root = Path(settings.out_dir)
    _remove_stale(root, set(grids))
    manifests = {}
    for identifier, spacing in grids.items():
        plan = make_plan(dataset, settings, plans, spacing, root / identifier, cfg.checks)
        records = _run_cases(cases, plan, cfg.base.num_workers)
        _remove_stale(plan.out_dir / "cases", {c.case_id for c in cases})
        stats = plan.stats.__dict__ if plan.stats else None
        write_json_atomic(plan.out_dir / "fingerprint.json", {"target_spacing": list(plan.target_spacing), "intensity": stats})
        manifests[identifier] = write_manifest(dataset, plan, records)
    return manifests["fullres"]


def planned_grids(plans: Plans) -> dict[str, tuple[float, float, float]]:
    """{data identifier: target spacing} of every planned configuration (``2d`` shares ``fullres``)."""
    return {c.data_identifier: c.spacing for c in plans.configurations.values() if c.spatial_dims == 3}


def make_plan(
    dataset: Dataset,
    settings: PreprocessSettings,
    plans: Plans,
    spacing: tuple[float, float, float],
    out_dir: Path,
    checks: CheckSettings = DEFAULT_CHECKS,
) -> Plan:
    """What every case of one grid needs: the target spacing, the CT statistics of the plan, the settings."""
    ct = next((n for n in plans.normalisation if n.scheme == "ct"), None)
    stats = IntensityStats(ct.mean, ct.std, ct.percentile_low, ct.percentile_high) if ct is not None else None
    payload = {
        "settings": settings.model_dump(mode="json", exclude={"out_dir"}),
        "spacing": list(spacing),
        "normalisation": [n.model_dump(mode="json") for n in plans.normalisation],
        "modalities": list(dataset.modalities),
        "labels": sorted(dataset.labels.values),
    }
    return Plan(
        settings,
        tuple(float(s) for s in spacing),
        stats,
        dataset.is_ct,
        frozenset(dataset.labels.values),
        dataset.labels.num_classes,
        Path(out_dir),
        text_digest(json.dumps(payload, sort_keys=True)),
        checks,
        Plan.bias_correction_of(plans.normalisation),
        Plan.masked_of(plans.normalisation),
    )


def _run_cases(cases: list[Case], plan: Plan, num_workers: int) -> dict[str, dict]:
    """Preprocess ``cases``; raise one DatasetError listing every failure (the other cases are still written)."""
    jobs = [CaseJob(c.case_id, c.images[0], (c, plan)) for c in cases]
    outcomes = map_cases(preprocess_case, jobs, num_workers, progress="preprocess")
    problems = [o for o in outcomes if isinstance(o, Problem)]
    if problems:
        raise DatasetError(problems, f"preprocessing failed for {len({p.case for p in problems})} of {len(cases)} case(s)")
    return {case.case_id: record for case, record in zip(cases, outcomes)}


def preprocess_case(case: Case, plan: Plan) -> dict:
    """Preprocess one case and write its arrays and record; skip if unchanged since the last run.

    Returns:
        The case's record (as written to ``record.json``).

    Raises:
        InvalidInputError: unreadable file, non-3D data, NaN voxels, mismatched label, bad label values.
    """
    case_dir = plan.out_dir / "cases" / case.case_id
    sources = [*case.images, *([case.label] if case.label else [])]

    def source_digests() -> dict[str, str]:
        return dict(zip(map(str, sources), thread_map(file_digest, sources)))

    def read() -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return read_case(case, set(plan.declared_labels), plan.checks, keep_integers=True)

    previous = _read_record(case_dir / "record.json")
    if previous and previous["config_digest"] == plan.digest:  # unchanged sources make the case a skip: hash first
        digests = source_digests()
        if previous["source_digests"] == digests:
            return previous
        image, affine, label = read()
    else:  # processed whatever the digests: hash the files while they are inflated (a read error comes first)
        (image, affine, label), digests = thread_map(lambda step: step(), [read, source_digests])
    geometry, image, label = transform_case(image, affine, label, plan)
    save_npy_atomic(case_dir / "image.npy", image)
    if label is not None:
        save_npy_atomic(case_dir / "label.npy", label)
    record = {
        "case_id": case.case_id,
        "split": case.split,
        "sources": [str(p) for p in sources],
        "source_digests": digests,
        "config_digest": plan.digest,
        "geometry": geometry.to_json(),
        "has_label": label is not None,
    }
    write_json_atomic(case_dir / "record.json", record)
    return record


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def transform_case(
    image: np.ndarray, affine: np.ndarray, label: np.ndarray | None, plan: Plan
) -> tuple[CaseGeometryRecord, np.ndarray, np.ndarray | None]:
    """Reorient, crop to the body, normalise and resample one case (training and inference alike).

    Args:
        image: float32 (C, x, y, z) in scanner units (HU for CT); CT may keep its integer storage type.
        affine: the image's RAS+ affine.
        label: uint8 (x, y, z) or ``None``.
        plan: target spacing, intensity statistics and settings.

    Returns:
        (the geometry record that inverts it, float32 (C, x', y', z') image, uint8 label or ``None``).
    """
    s = plan.settings
    if not plan.is_ct:  # MR statistics and N4 run on float32; CT is normalised pointwise, after cropping
        image = image.astype(np.float32, copy=False)
    stacked = np.moveaxis(image, 0, -1)
    ras, ras_affine, to_ras = reorient_to_ras(stacked, affine)
    ras = np.moveaxis(ras, -1, 0)
    ras_label = reorient_to_ras(label, affine)[0] if label is not None else None
    spacing = ras_spacing(affine)
    body = foreground_mask(ras, plan.is_ct, s.body_threshold_hu, plan.masked)
    if ras_label is not None:
        body |= ras_label > 0
    start, stop = crop_box(body, spacing, s.crop_margin_mm)
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    cropped = ras[(slice(None), *box)]
    shape = resampled_shape(cropped.shape[1:], spacing, plan.target_spacing)
    out_image = stack_channels([_resample_channel(c, plan, spacing, shape, i) for i, c in enumerate(cropped)])
    out_label = None
    if ras_label is not None:
        out_label = resample_labels(ras_label[box], spacing, plan.target_spacing, shape, plan.num_classes)
    record = CaseGeometryRecord(
        affine,
        tuple(int(v) for v in image.shape[1:]),
        to_ras,
        start,
        stop,
        spacing,
        plan.target_spacing,
        shape,
        crop_resampled_affine(ras_affine, start, spacing, plan.target_spacing),
    )
    return record, out_image, out_label


def _resample_channel(channel: np.ndarray, plan: Plan, spacing, shape, index: int) -> np.ndarray:
    """Normalise and resample cropped channel ``index`` to the plan's grid (float32).

    CT normalisation is pointwise, so with linear resampling it runs on the gathered neighbours of the output grid only
    (:func:`resample_linear`); MR normalisation needs the whole channel (foreground statistics, N4) and runs first.
    """
    s = plan.settings
    corrected = bool(plan.bias_correction and plan.bias_correction[index])
    masked = not plan.masked or plan.masked[index]
    if s.image_interpolation != "linear":
        normalised = (
            normalise_ct(channel, plan.stats, s) if plan.is_ct else normalise_mr(channel, spacing, corrected, use_mask=masked)
        )
        return resample_volume(normalised, spacing, plan.target_spacing, shape, s.image_interpolation).astype(np.float32)
    if plan.is_ct:
        return resample_linear(channel, spacing, plan.target_spacing, shape, lambda v: normalise_ct(v, plan.stats, s))
    normalised = normalise_mr(channel, spacing, corrected, use_mask=masked)
    return resample_linear(normalised, spacing, plan.target_spacing, shape)


def _remove_stale(folder: Path, keep: set[str]) -> None:
    """Delete sub-folders of ``folder`` not in ``keep`` (cases or grids that are no longer planned)."""
    if folder.is_dir():
        for child in folder.iterdir():
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child)


def write_manifest(dataset: Dataset, plan: Plan, records: dict[str, dict]) -> Path:
    """Write ``<out_dir>/dataset.json``: the list of preprocessed cases that training and inference read."""
    cases = []
    for case_id, record in records.items():
        entry = {
            "case_id": case_id,
            "split": record["split"],
            "image": f"cases/{case_id}/image.npy",
            "record": f"cases/{case_id}/record.json",
        }
        if record["has_label"]:
            entry["label"] = f"cases/{case_id}/label.npy"
        cases.append(entry)
    manifest = {
        "source": str(dataset.root),
        "layout": dataset.layout,
        "modalities": list(dataset.modalities),
        "labels": {str(label.value): label.name for label in dataset.labels.labels},
        "target_spacing": list(plan.target_spacing),
        "config_digest": plan.digest,
        "cases": cases,
    }
    path = plan.out_dir / "dataset.json"
    write_json_atomic(path, manifest)
    return path
