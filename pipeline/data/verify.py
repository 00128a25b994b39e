"""Integrity verification (``segpipe verify``): rows F1-F3, F6, G1-G4, G8, V1-V4, V6, V7 of RELIABILITY.md.

Every file is read eagerly; every problem of every case is collected and reported, one line each
starting with the file path; errors make the command exit non-zero, warnings alone do not.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.config import VerifySettings
from pipeline.data.layout import Case, Dataset, load_dataset
from pipeline.data.nifti import LoadedNifti, check_integer_labels, read_nifti
from pipeline.errors import DatasetError, InvalidInputError, Problem
from pipeline.io_utils import write_json_atomic


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of a dataset check."""

    root: Path
    problems: tuple[Problem, ...]
    cases: dict[str, dict]

    @property
    def errors(self) -> list[Problem]:
        """Problems of severity ``error``."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """Problems of severity ``warning``."""
        return [p for p in self.problems if p.severity == "warning"]

    def to_json(self) -> dict:
        """JSON form written to the report file."""
        return {
            "dataset": str(self.root),
            "num_cases": len(self.cases),
            "num_errors": len(self.errors),
            "num_warnings": len(self.warnings),
            "problems": [p.__dict__ for p in self.problems],
            "cases": self.cases,
        }


def verify_dataset(root: Path, settings: VerifySettings, num_workers: int = 0) -> VerifyReport:
    """Check every file of the dataset at ``root`` and collect all problems.

    Args:
        root: dataset folder (MSD or nnU-Net v2 raw layout).
        settings: tolerances and policies.
        num_workers: processes for per-case checks (0 = in this process).

    Returns:
        The report (never raises for bad data; a missing/invalid dataset.json becomes a problem).
    """
    try:
        dataset = load_dataset(root, strict=False)
    except DatasetError as exc:
        return VerifyReport(Path(root), tuple(exc.problems), {})
    jobs = [(case, dataset, settings) for case in dataset.cases]
    if num_workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            results = list(pool.map(_check_case_job, jobs))
    else:
        results = [_check_case_job(job) for job in jobs]
    problems = list(dataset.problems)
    summaries = {}
    for case, (case_problems, summary) in zip(dataset.cases, results):
        problems += case_problems
        summaries[case.case_id] = summary
    return VerifyReport(Path(root), tuple(problems), summaries)


def write_report(report: VerifyReport, path: Path) -> None:
    """Write the report as JSON (atomically)."""
    write_json_atomic(path, report.to_json())


def _check_case_job(job: tuple[Case, Dataset, VerifySettings]) -> tuple[list[Problem], dict]:
    case, dataset, settings = job
    checker = _CaseChecker(case, dataset, settings)
    return checker.run(), checker.summary


class _CaseChecker:
    """Checks one case's channels and label; collects problems instead of raising."""

    def __init__(self, case: Case, dataset: Dataset, settings: VerifySettings):
        self.case, self.dataset, self.settings = case, dataset, settings
        self.problems: list[Problem] = []
        self.summary: dict = {"split": case.split}

    def add(self, path: Path, code: str, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(str(path), code, severity, message, self.case.case_id))

    def run(self) -> list[Problem]:
        images = [img for path in self.case.images if path.exists() and (img := self._read(path)) is not None]
        for image in images:
            self._check_values(image)
        if len(images) == len(self.case.images) and images:
            self._check_channels(images)
            self.summary.update(shape=list(images[0].geometry.shape), spacing=images[0].geometry.spacing.round(4).tolist())
            if self.case.label is not None and self.case.label.exists() and (label := self._read(self.case.label)):
                self._check_label(label, images[0])
        return self.problems

    def _read(self, path: Path) -> LoadedNifti | None:
        try:
            loaded = read_nifti(path, self.case.case_id)
        except InvalidInputError as exc:
            self.add(path, exc.code or "F2", exc.reason)
            return None
        if mismatch := loaded.suffix_mismatch():
            self.add(path, "F3", f"{mismatch}; read by content, outputs use the correct suffix", "warning")
        loaded = self._squeeze_or_reject(loaded)
        if loaded is not None:
            self._check_orthonormal(loaded)
        return loaded

    def _squeeze_or_reject(self, loaded: LoadedNifti) -> LoadedNifti | None:
        """Row G8: squeeze a singleton 4th axis (if allowed); reject 2D and true 4D data."""
        shape = loaded.data.shape
        if loaded.data.ndim == 4 and shape[3] == 1 and self.settings.allow_singleton_4d:
            self.add(loaded.path, "G8", f"4D with a singleton 4th axis {shape}: squeezed to 3D", "warning")
            return replace(loaded, data=loaded.data[..., 0])
        if loaded.data.ndim == 3 and min(shape) > 1:
            return loaded
        kind = "4D" if loaded.data.ndim == 4 else "2D"
        self.add(loaded.path, "G8", f"{kind} data with shape {shape}; expected a 3D volume (x, y, z) with every axis > 1")
        return None

    def _check_orthonormal(self, loaded: LoadedNifti) -> None:
        deviation = loaded.geometry.orthonormality_error()
        if deviation > self.settings.direction_tolerance:
            self.add(
                loaded.path,
                "G4",
                f"direction matrix is not orthonormal (max |D^T D - I| = {deviation:.4g} > "
                f"{self.settings.direction_tolerance:g}): sheared affine {np.round(loaded.affine[:3, :3], 4).tolist()}",
            )

    def _check_values(self, image: LoadedNifti) -> None:
        data = image.data
        if np.issubdtype(data.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(data)))
            if bad:
                self.add(image.path, "V1", f"{bad} NaN/Inf voxels of {data.size}")
                return
        low, high = data.min(), data.max()
        if low == high:
            self.add(
                image.path,
                "V7",
                f"constant image (every voxel = {float(low):g}); normalisation will not divide by zero",
                "warning",
            )

    def _check_channels(self, images: list[LoadedNifti]) -> None:
        first = images[0]
        for other in images[1:]:
            if other.geometry.shape != first.geometry.shape or not np.allclose(
                other.affine, first.affine, atol=self.settings.origin_tolerance_mm
            ):
                self.add(
                    other.path,
                    "G8",
                    f"channel geometry differs from {first.path.name}: shape {other.geometry.shape} vs {first.geometry.shape}, "
                    f"affine {np.round(other.affine, 4).tolist()} vs {np.round(first.affine, 4).tolist()}",
                )

    def _check_label(self, label: LoadedNifti, image: LoadedNifti) -> None:
        self._compare_geometry(label, image)
        values = self._label_values(label)
        if values is None:
            return
        declared = self.dataset.labels.values
        undeclared = sorted(set(values) - declared)
        if undeclared:
            self.add(
                label.path,
                "V4",
                f"label values {undeclared} are not declared in dataset.json; "
                f"expected {sorted(declared)}, found {sorted(values)}",
            )
        if set(values) <= {0}:
            self.add(label.path, "V6", "label map is all background (no foreground voxel)", "warning")
        self.summary["label_values"] = sorted(int(v) for v in values)

    def _compare_geometry(self, label: LoadedNifti, image: LoadedNifti) -> None:
        ig, lg, s = image.geometry, label.geometry, self.settings
        where = f"image {image.path}"
        if ig.shape != lg.shape:
            self.add(label.path, "G1", f"shape {lg.shape} differs from {where} shape {ig.shape}")
        if not np.allclose(ig.spacing, lg.spacing, atol=s.spacing_tolerance_mm, rtol=0):
            self.add(
                label.path,
                "G2",
                f"spacing {_fmt(lg.spacing)} mm differs from {where} spacing {_fmt(ig.spacing)} mm "
                f"(tolerance {s.spacing_tolerance_mm:g} mm)",
            )
        if not np.allclose(ig.origin, lg.origin, atol=s.origin_tolerance_mm, rtol=0):
            self.add(
                label.path,
                "G3",
                f"origin {_fmt(lg.origin)} differs from {where} origin {_fmt(ig.origin)} "
                f"(tolerance {s.origin_tolerance_mm:g} mm)",
            )
        if not np.allclose(ig.direction, lg.direction, atol=s.direction_tolerance, rtol=0):
            self.add(label.path, "G3", f"direction {_fmt(lg.direction)} differs from {where} direction {_fmt(ig.direction)}")

    def _label_values(self, label: LoadedNifti) -> Iterable[int] | None:
        try:
            check_integer_labels(label, self.case.case_id)
        except InvalidInputError as exc:
            self.add(label.path, exc.code or "V3", exc.reason)
            return None
        if np.issubdtype(label.data.dtype, np.floating):
            self.add(
                label.path, "V2", f"label stored as {label.data.dtype} with exact integer values; converted to uint8", "warning"
            )
        return [int(v) for v in np.unique(label.data)]


def _fmt(values: np.ndarray) -> str:
    return str(np.round(np.asarray(values, dtype=float), 4).tolist())
