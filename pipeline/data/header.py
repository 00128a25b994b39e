"""The header checks every reader applies: one function, one set of tolerances (``checks`` in the config).

``verify`` reports the findings of every file together; ``plan``, ``preprocess``, ``infer``, ``predict``,
``evaluate`` and ``export`` call :func:`require_valid_header`, which turns the errors into one
:class:`InvalidInputError` naming the file. Rows G4, G9-G11 and V8 of docs/RELIABILITY.md.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

from pipeline.config import CheckSettings
from pipeline.data.nifti import LoadedNifti, read_nifti
from pipeline.errors import InvalidInputError

log = logging.getLogger(__name__)

DEFAULT_CHECKS = CheckSettings()


@dataclass(frozen=True)
class HeaderFinding:
    """One defect (or note) of a file's header."""

    code: str
    severity: str  # "error" | "warning" | "note"
    message: str


def header_findings(loaded: LoadedNifti, checks: CheckSettings = DEFAULT_CHECKS, is_label: bool = False) -> list[HeaderFinding]:
    """Check a file's geometry and scaling; return every finding (errors, warnings and notes).

    Args:
        loaded: the file as read by :func:`pipeline.data.nifti.read_nifti`.
        checks: tolerances.
        is_label: a label map (intensity scaling is then an error, V8).
    """
    findings = _spacing_findings(loaded)
    if not any(f.severity == "error" for f in findings):
        findings += _shear_findings(loaded, checks)
        findings += _transform_findings(loaded, checks)
    if is_label:
        findings += _scaling_findings(loaded)
    return findings


def require_valid_header(
    loaded: LoadedNifti, checks: CheckSettings = DEFAULT_CHECKS, case: str | None = None, is_label: bool = False
) -> None:
    """Raise one error listing every header error of ``loaded``; log its warnings.

    Raises:
        InvalidInputError: zero/negative/NaN spacing (G11), shear (G4), qform and sform that disagree (G9),
            scaling on a label map (V8).
    """
    findings = header_findings(loaded, checks, is_label)
    for finding in findings:
        if finding.severity == "warning":
            log.warning("%s: [%s] %s", loaded.path, finding.code, finding.message)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        reason = errors[0].message + "".join(f"; [{f.code}] {f.message}" for f in errors[1:])
        raise InvalidInputError(loaded.path, reason, case, errors[0].code)


def read_checked(path, case_id: str | None, checks: CheckSettings = DEFAULT_CHECKS, is_label: bool = False) -> LoadedNifti:
    """Read one NIfTI file with the size limit and every header check; log data found past the declared size.

    Raises:
        InvalidInputError: as :func:`pipeline.data.nifti.read_nifti` and :func:`pipeline.data.header.require_valid_header`.
    """
    loaded = read_nifti(path, case_id, int(checks.max_decoded_gib * 2**30))
    require_valid_header(loaded, checks, case_id, is_label)
    if loaded.trailing_bytes:
        log.warning("%s: [F7] %d bytes or more past the declared voxel data were ignored", path, loaded.trailing_bytes)
    return loaded


def same_grid(first: LoadedNifti, second: LoadedNifti, checks: CheckSettings = DEFAULT_CHECKS) -> bool:
    """Whether two files lie on the same grid: equal shape, and corners within ``checks.origin_tolerance_mm``."""
    shape = first.data.shape[:3]
    return (
        shape == second.data.shape[:3]
        and corner_displacement_mm(first.affine, second.affine, shape) <= checks.origin_tolerance_mm
    )


def _spacing_findings(loaded: LoadedNifti) -> list[HeaderFinding]:
    pixdim = np.asarray(loaded.stored["pixdim"][1:4], dtype=np.float64)
    affine = loaded.affine
    findings = []
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim <= 0):
        findings.append(HeaderFinding("G11", "error", f"voxel spacing (pixdim) {pixdim.tolist()} must be finite and > 0"))
    if not np.all(np.isfinite(affine)):
        findings.append(HeaderFinding("G11", "error", f"affine holds NaN/Inf: {np.round(affine, 4).tolist()}"))
    elif np.any(np.linalg.norm(affine[:3, :3], axis=0) <= 0) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        findings.append(
            HeaderFinding("G11", "error", f"affine is singular (direction unreadable): {np.round(affine, 4).tolist()}")
        )
    return findings


def _shear_findings(loaded: LoadedNifti, checks: CheckSettings) -> list[HeaderFinding]:
    deviation = loaded.geometry.orthonormality_error()
    if deviation <= checks.direction_tolerance:
        return []
    message = (
        f"direction matrix is not orthonormal (max |D^T D - I| = {deviation:.4g} > {checks.direction_tolerance:g}): "
        f"sheared or gantry-tilted affine {np.round(loaded.affine[:3, :3], 4).tolist()}; resample it to a rigid grid first"
    )
    return [HeaderFinding("G4", "error", message)]


def _transform_findings(loaded: LoadedNifti, checks: CheckSettings) -> list[HeaderFinding]:
    header = loaded.header
    if "qform_code" not in header:  # NIfTI-2 keeps the same fields; Analyze has none
        return []
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode > 0 and scode > 0:
        qform, sform = header.get_qform(), header.get_sform()
        shift = corner_displacement_mm(qform, sform, loaded.geometry.shape)
        if shift > checks.origin_tolerance_mm:
            return [
                HeaderFinding(
                    "G9",
                    "error",
                    f"qform and sform disagree by up to {shift:.3g} mm at the image corners (tolerance "
                    f"{checks.origin_tolerance_mm:g} mm): nibabel reads the sform {np.round(sform, 4).tolist()}, ITK-based "
                    f"viewers (SimpleITK, 3D Slicer, ITK-SNAP) may read the qform {np.round(qform, 4).tolist()}",
                )
            ]
        return [HeaderFinding("G10", "note", "qform and sform agree")]
    if scode > 0:
        return [HeaderFinding("G10", "note", f"only the sform is set (code {scode}); it is used, as every viewer does")]
    if qcode > 0:
        return [HeaderFinding("G10", "note", f"only the qform is set (code {qcode}); it is used, as every viewer does")]
    return [
        HeaderFinding(
            "G10", "warning", "neither qform nor sform is set: the grid is placed from pixdim alone (no orientation, origin 0)"
        )
    ]


def _scaling_findings(loaded: LoadedNifti) -> list[HeaderFinding]:
    slope, inter = (float(loaded.stored[k]) for k in ("scl_slope", "scl_inter"))
    if (not np.isfinite(slope) or slope in (0, 1)) and (not np.isfinite(inter) or inter == 0):
        return []
    return [
        HeaderFinding(
            "V8",
            "error",
            f"label map carries intensity scaling (scl_slope={slope}, scl_inter={inter}): label values would be rescaled; "
            "store the label ids directly (scl_slope 0 or 1, scl_inter 0)",
        )
    ]


def corner_displacement_mm(first: np.ndarray, second: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between where two affines place the 8 corner voxels of a grid of ``shape``."""
    corners = np.array([[*c, 1.0] for c in itertools.product(*[(0, max(int(n) - 1, 0)) for n in shape[:3]])])
    return float(np.linalg.norm((corners @ first.T - corners @ second.T)[:, :3], axis=1).max())
