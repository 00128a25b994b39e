"""Integrity verification (``segpipe verify``): rows F1-F3, F6-F8, G1-G4, G8-G11, V1-V4, V6-V8, P3, P4 of docs/RELIABILITY.md.

Every file is read eagerly; every problem of every case is collected and reported, one line each
starting with the file path; errors make the command exit non-zero, warnings alone do not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from pipeline.config import CheckSettings, VerifySettings
from pipeline.data.header import DEFAULT_CHECKS, header_findings, same_grid
from pipeline.data.labels import present_values
from pipeline.data.layout import Case, Dataset, load_dataset
from pipeline.data.nifti import LoadedNifti, channel_volumes, check_integer_labels, read_nifti
from pipeline.errors import DatasetError, InvalidInputError, Problem
from pipeline.io_utils import write_json_atomic
from pipeline.parallel import CaseJob, map_cases


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


def verify_dataset(
    root: Path, settings: VerifySettings, num_workers: int = 0, checks: CheckSettings = DEFAULT_CHECKS
) -> VerifyReport:
    """Check every file of the dataset at ``root`` and collect all problems.

    Args:
        root: dataset folder (MSD or nnU-Net v2 raw layout).
        settings: report path and policies.
        num_workers: processes for per-case checks (0 = in this process).
        checks: the tolerances and limits every reader shares.

    Returns:
        The report (never raises for bad data; a missing/invalid dataset.json becomes a problem, and a case whose
        check fails in an unexpected way, or kills its worker, becomes a problem naming that case).
    """
    try:
        dataset = load_dataset(root, strict=False)
    except DatasetError as exc:
        return VerifyReport(Path(root), tuple(exc.problems), {})
    jobs = [CaseJob(case.case_id, (case.images or (root,))[0], (case, dataset, settings, checks)) for case in dataset.cases]
    problems = list(dataset.problems)
    summaries = {}
    for case, outcome in zip(dataset.cases, map_cases(check_case, jobs, num_workers)):
        if isinstance(outcome, Problem):
            problems.append(outcome)
            summaries[case.case_id] = {"split": case.split, "failed": outcome.message}
            continue
        problems += outcome[0]
        summaries[case.case_id] = outcome[1]
    return VerifyReport(Path(root), tuple(problems), summaries)


def write_report(report: VerifyReport, path: Path) -> None:
    """Write the report as JSON (atomically)."""
    write_json_atomic(path, report.to_json())


def check_case(case: Case, dataset: Dataset, settings: VerifySettings, checks: CheckSettings) -> tuple[list[Problem], dict]:
    """Check one case's files; return its problems and a summary (shape, spacing, label values, transform used)."""
    checker = _CaseChecker(case, dataset, settings, checks)
    return checker.run(), checker.summary


class _CaseChecker:
    """Checks one case's channels and label; collects problems instead of raising."""

    def __init__(self, case: Case, dataset: Dataset, settings: VerifySettings, checks: CheckSettings):
        self.case, self.dataset, self.settings, self.checks = case, dataset, settings, checks
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
            label_path = self.case.label
            if label_path is not None and label_path.exists() and (label := self._read(label_path, is_label=True)):
                self._check_label(label, images[0])
        return self.problems

    def _read(self, path: Path, is_label: bool = False) -> LoadedNifti | None:
        try:
            loaded = read_nifti(path, self.case.case_id, int(self.checks.max_decoded_gib * 2**30))
        except InvalidInputError as exc:
            self.add(path, exc.code or "F2", exc.reason)
            return None
        if mismatch := loaded.suffix_mismatch():
            self.add(path, "F3", f"{mismatch}; read by content, outputs use the correct suffix", "warning")
        if loaded.trailing_bytes:
            self.add(path, "F7", f"{loaded.trailing_bytes} bytes or more past the declared voxel data; ignored", "warning")
        loaded = self._squeeze_or_reject(loaded, is_label)
        if loaded is not None and not self._check_header(loaded, is_label):
            return None
        return loaded

    def _check_header(self, loaded: LoadedNifti, is_label: bool) -> bool:
        """Add the header's findings; return whether the file is usable (no header error)."""
        usable = True
        for finding in header_findings(loaded, self.checks, is_label):
            if finding.severity == "note":
                self.summary.setdefault("transform", {})[loaded.path.name] = finding.message
                continue
            self.add(loaded.path, finding.code, finding.message, finding.severity)
            usable &= finding.severity != "error"
        return usable

    def _squeeze_or_reject(self, loaded: LoadedNifti, is_label: bool) -> LoadedNifti | None:
        """Row G8: squeeze a singleton 4th axis (if allowed); keep a multi-modal MSD image's channel axis; reject 2D and
        other 4D data."""
        shape = loaded.data.shape
        packed = self.case.packed_channels
        if packed > 1 and not is_label:  # the reader's rule for a multi-modal MSD image, reported instead of raised
            try:
                channel_volumes(loaded, packed, self.case.case_id)
            except InvalidInputError as exc:
                self.add(loaded.path, exc.code or "G8", exc.reason)
                return None
            return loaded
        if loaded.data.ndim == 4 and shape[3] == 1 and self.settings.allow_singleton_4d:
            self.add(loaded.path, "G8", f"4D with a singleton 4th axis {shape}: squeezed to 3D", "warning")
            return replace(loaded, data=loaded.data[..., 0])
        if loaded.data.ndim == 3 and min(shape) > 1:
            return loaded
        kind = "4D" if loaded.data.ndim == 4 else "2D"
        self.add(loaded.path, "G8", f"{kind} data with shape {shape}; expected a 3D volume (x, y, z) with every axis > 1")
        return None

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
            if not same_grid(other, first, self.checks):
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
        ig, lg, s = image.geometry, label.geometry, self.checks
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
                label.path,
                "V2",
                f"label stored as {label.data.dtype} with exact integer values; converted",
                "warning",
            )
        return present_values(label.data)


def _fmt(values: np.ndarray) -> str:
    return str(np.round(np.asarray(values, dtype=float), 4).tolist())
