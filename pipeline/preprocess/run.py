"""The ``preprocess`` stage: fingerprint, then per case reorient -> crop -> normalise -> resample -> save.

Outputs under ``preprocess.out_dir``:
* ``cases/<case_id>/image.npy`` float32 (C, x, y, z), uncompressed so training can memory-map it;
* ``cases/<case_id>/label.npy`` uint8 (x, y, z) for labelled cases;
* ``cases/<case_id>/record.json``: geometry record (inverts everything), source digests, config digest;
* ``fingerprint.json`` and ``dataset.json`` (the manifest training reads).
Cases whose sources and settings are unchanged are skipped (resumable); all failures are collected.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import PipelineConfig, PreprocessSettings
from pipeline.data.layout import Case, Dataset, load_dataset
from pipeline.errors import DatasetError, InvalidInputError, Problem
from pipeline.io_utils import file_digest, save_npy_atomic, text_digest, write_json_atomic
from pipeline.preprocess.fingerprint import compute_fingerprint
from pipeline.preprocess.geometry import (
    CaseGeometryRecord,
    bounding_box,
    crop_resampled_affine,
    ras_spacing,
    reorient_to_ras,
    resample_volume,
    resampled_shape,
)
from pipeline.preprocess.intensity import IntensityStats, normalise_ct, normalise_mr
from pipeline.preprocess.reading import read_case


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


def preprocess_dataset(cfg: PipelineConfig) -> Path:
    """Run the preprocess stage for ``cfg.data.root``.

    Returns:
        Path of the written manifest (``<out_dir>/dataset.json``).

    Raises:
        DatasetError: missing files or any case that cannot be preprocessed (all listed).
    """
    settings = cfg.preprocess
    dataset = load_dataset(cfg.data.root)
    fingerprint, problems = compute_fingerprint(
        dataset,
        settings.ct_percentiles,
        settings.intensity_samples_per_case,
        cfg.base.seed,
        settings.body_threshold_hu,
        cfg.base.num_workers,
    )
    failed = {p.case for p in problems}
    plan = make_plan(dataset, settings, fingerprint)
    cases = [c for c in dataset.cases if settings.include_unlabeled or c.split != "unlabeled"]
    records = _run_cases([c for c in cases if c.case_id not in failed], plan, cfg.base.num_workers, problems, len(cases))
    _remove_stale(plan.out_dir / "cases", {c.case_id for c in cases})
    write_json_atomic(plan.out_dir / "fingerprint.json", {**fingerprint, "target_spacing": list(plan.target_spacing)})
    return write_manifest(dataset, plan, records)


def make_plan(dataset: Dataset, settings: PreprocessSettings, fingerprint: dict) -> Plan:
    """Fix the target spacing (config or fingerprint median) and intensity statistics for all cases."""
    spacing = settings.spacing_mm or tuple(round(s, 4) for s in fingerprint["median_spacing"])
    stats = IntensityStats(**fingerprint["intensity"]) if dataset.is_ct else None
    payload = {
        "settings": settings.model_dump(mode="json", exclude={"out_dir"}),
        "spacing": list(spacing),
        "stats": fingerprint["intensity"] if stats else None,
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
        Path(settings.out_dir),
        text_digest(json.dumps(payload, sort_keys=True)),
    )


def _run_cases(cases: list[Case], plan: Plan, num_workers: int, problems: list[Problem], total: int) -> dict[str, dict]:
    """Preprocess ``cases``; raise one DatasetError with ``problems`` (earlier ones) plus every new failure."""
    records: dict[str, dict] = {}
    progress = tqdm(total=len(cases), desc="preprocess", unit="case", disable=None)
    if num_workers > 0:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            futures = {c.case_id: pool.submit(preprocess_case, c, plan) for c in cases}
            for case in cases:
                _collect(case, futures[case.case_id], records, problems, progress)
    else:
        for case in cases:
            _collect(case, None, records, problems, progress, plan)
    progress.close()
    if problems:
        raise DatasetError(problems, f"preprocessing failed for {len({p.case for p in problems})} of {total} case(s)")
    return records


def _collect(case: Case, future: Future | None, records: dict, problems: list, progress, plan: Plan | None = None) -> None:
    try:
        records[case.case_id] = future.result() if future is not None else preprocess_case(case, plan)
    except InvalidInputError as exc:
        problems.append(Problem(str(exc.path), exc.code or "P", "error", exc.reason, case.case_id))
    progress.update(1)


def preprocess_case(case: Case, plan: Plan) -> dict:
    """Preprocess one case and write its arrays and record; skip if unchanged since the last run.

    Returns:
        The case's record (as written to ``record.json``).

    Raises:
        InvalidInputError: unreadable file, non-3D data, NaN voxels, mismatched label, bad label values.
    """
    case_dir = plan.out_dir / "cases" / case.case_id
    sources = [*case.images, *([case.label] if case.label else [])]
    digests = {str(p): file_digest(p) for p in sources}
    previous = _read_record(case_dir / "record.json")
    if previous and previous["config_digest"] == plan.digest and previous["source_digests"] == digests:
        return previous
    image, affine, label = read_case(case, set(plan.declared_labels))
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
        image: float32 (C, x, y, z) in scanner units (HU for CT).
        affine: the image's RAS+ affine.
        label: uint8 (x, y, z) or ``None``.
        plan: target spacing, intensity statistics and settings.

    Returns:
        (the geometry record that inverts it, float32 (C, x', y', z') image, uint8 label or ``None``).
    """
    s = plan.settings
    stacked = np.moveaxis(image, 0, -1)
    ras, ras_affine, to_ras = reorient_to_ras(stacked, affine)
    ras = np.moveaxis(ras, -1, 0)
    ras_label = reorient_to_ras(label, affine)[0] if label is not None else None
    spacing = ras_spacing(affine)
    body = ras[0] > s.body_threshold_hu if plan.is_ct else (ras != 0).any(axis=0)
    if ras_label is not None:
        body |= ras_label > 0
    start, stop = bounding_box(body, np.ceil(s.crop_margin_mm / np.asarray(spacing)).astype(int))
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    cropped = ras[(slice(None), *box)]
    normalised = np.stack([normalise_ct(c, plan.stats, s) if plan.is_ct else normalise_mr(c) for c in cropped])
    shape = resampled_shape(cropped.shape[1:], spacing, plan.target_spacing)
    out_image = resample_volume(normalised, spacing, plan.target_spacing, shape, s.image_interpolation).astype(np.float32)
    out_label = None
    if ras_label is not None:
        one_hot = np.stack([(ras_label[box] == c).astype(np.float32) for c in range(plan.num_classes)])
        out_label = resample_volume(one_hot, spacing, plan.target_spacing, shape, "linear").argmax(axis=0).astype(np.uint8)
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


def _remove_stale(cases_dir: Path, keep: set[str]) -> None:
    if cases_dir.is_dir():
        for child in cases_dir.iterdir():
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
