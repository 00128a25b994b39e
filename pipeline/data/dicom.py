"""DICOM CT series: checked reading into the pipeline's (x, y, z) + RAS-affine convention, and writing.

Reading (rows D1, D2 of RELIABILITY.md): every file in a folder is parsed (headers first); files
that are not DICOM images are skipped; several series in one folder are an error listing their
SeriesInstanceUIDs unless one is chosen; slices are sorted by their position along the slice
normal (never by file name or InstanceNumber) and a duplicate, missing or unevenly spaced slice is
an error naming the largest deviation. Voxels are ``pixel * RescaleSlope + RescaleIntercept``.

Array convention: ``array[i, j, k]`` is column ``i``, row ``j`` of the ``k``-th slice in sorted
order, so ``array[..., k]`` belongs to ``files[k]`` (DICOM SEG frames are written in that order).
The affine is RAS+ (nibabel); DICOM is LPS, so the first two world rows change sign.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InvalidInputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SLICE_SPACING_TOLERANCE = 0.01  # relative deviation from the median slice spacing (row D2)
REQUIRED_TAGS = ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns")


@dataclass(frozen=True)
class DicomSeries:
    """One CT/MR series read from a folder."""

    folder: Path
    series_uid: str
    files: tuple[Path, ...]  # sorted along the slice normal; files[k] holds array[..., k]
    array: np.ndarray  # float32 (x=column, y=row, z=slice)
    affine: np.ndarray  # RAS+ 4x4
    modality: str


def is_dicom_folder(path: Path) -> bool:
    """True when ``path`` is a folder holding at least one DICOM file (``DICM`` magic at byte 128)."""
    path = Path(path)
    return path.is_dir() and any(_has_dicom_magic(p) for p in path.iterdir() if p.is_file())


def _has_dicom_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def read_dicom_series(folder: Path, series_uid: str | None = None, direction_tolerance: float = 1e-4) -> DicomSeries:
    """Read one image series from ``folder``.

    Args:
        folder: a folder of DICOM files (not searched recursively).
        series_uid: the SeriesInstanceUID to read when the folder holds several.
        direction_tolerance: ``checks.direction_tolerance`` (orientation equality, orthonormality, gantry tilt).

    Returns:
        The series, with voxels and a RAS affine.

    Raises:
        InvalidInputError: no DICOM image (F1), several series and none chosen or the chosen one
            absent (D1), inconsistent orientation/size, duplicate or missing slices, uneven spacing (D2), a missing or
            unreadable geometry tag (D3), zero/negative spacing (G11), a non-orthonormal orientation or gantry tilt (G4).
    """
    folder = Path(folder)
    headers = _read_headers(folder)
    series = _choose_series(folder, headers, series_uid)
    for path, ds in series:
        _check_geometry_tags(path, ds, direction_tolerance)
    ordered, positions = _sort_slices(folder, series, direction_tolerance)
    array = _read_voxels(ordered)
    affine = _affine(series[0][1], positions)
    _check_no_tilt(folder, affine, direction_tolerance)
    uid = str(series[0][1].SeriesInstanceUID)
    return DicomSeries(folder, uid, tuple(p for p, _ in ordered), array, affine, str(series[0][1].get("Modality", "")))


def choose_series_uid(folder: Path, series_uid: str | None = None) -> str:
    """The SeriesInstanceUID :func:`read_dicom_series` would read from ``folder`` (headers only).

    Raises:
        InvalidInputError: as :func:`read_dicom_series` for rows F1 and D1.
    """
    folder = Path(folder)
    return str(_choose_series(folder, _read_headers(folder), series_uid)[0][1].SeriesInstanceUID)


def _read_headers(folder: Path) -> list[tuple[Path, object]]:
    import pydicom

    if not folder.is_dir():
        raise InvalidInputError(folder, "not a folder of DICOM files", code="F1")
    headers = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError):
            continue
        if "ImagePositionPatient" in ds and "SeriesInstanceUID" in ds and "Rows" in ds:
            headers.append((path, ds))
    if not headers:
        raise InvalidInputError(folder, "no DICOM image files (with ImagePositionPatient) in this folder", code="F1")
    return headers


def _choose_series(folder: Path, headers: list, series_uid: str | None) -> list:
    groups: dict[str, list] = {}
    for path, ds in headers:
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    if series_uid is not None:
        if series_uid not in groups:
            raise InvalidInputError(folder, f"series {series_uid} not found; present: {_describe_series(groups)}", code="D1")
        return groups[series_uid]
    if len(groups) > 1:
        raise InvalidInputError(
            folder, f"{len(groups)} series in one folder: {_describe_series(groups)}; choose one with --series-uid", code="D1"
        )
    return next(iter(groups.values()))


def _describe_series(groups: dict[str, list]) -> str:
    parts = []
    for uid, members in sorted(groups.items()):
        description = str(members[0][1].get("SeriesDescription", "")).strip()
        parts.append(f"{uid} ({len(members)} files{', ' + repr(description) if description else ''})")
    return "; ".join(parts)


def _check_geometry_tags(path: Path, ds, tolerance: float) -> None:
    """Row D3: the tags that place a slice must be present and numeric; spacing > 0 (G11); orientation orthonormal (G4)."""
    missing = [tag for tag in REQUIRED_TAGS if tag not in ds or ds.get(tag) in (None, "")]
    if missing:
        raise InvalidInputError(path, f"missing DICOM geometry tag(s) {missing}: the slice cannot be placed", code="D3")
    try:
        orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        spacing = np.asarray(ds.PixelSpacing, dtype=np.float64)
        np.asarray(ds.ImagePositionPatient, dtype=np.float64).reshape(3)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(path, f"unreadable DICOM geometry tag ({exc})", code="D3") from None
    if orientation.shape != (6,) or spacing.shape != (2,):
        raise InvalidInputError(
            path, f"ImageOrientationPatient {orientation.tolist()} / PixelSpacing {spacing.tolist()}", code="D3"
        )
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InvalidInputError(path, f"PixelSpacing {spacing.tolist()} must be finite and > 0", code="G11")
    row, column = orientation[:3], orientation[3:]
    error = max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(column) - 1), abs(float(row @ column)))
    if not np.isfinite(error) or error > tolerance:
        raise InvalidInputError(
            path, f"ImageOrientationPatient {orientation.tolist()} is not orthonormal ({error:.3g})", code="G4"
        )


def _check_no_tilt(folder: Path, affine: np.ndarray, tolerance: float) -> None:
    """Row G4: slices stacked off the slice normal (gantry tilt) make a sheared grid that viewers cannot hold."""
    axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    deviation = float(np.abs(axes.T @ axes - np.eye(3)).max())
    if deviation > tolerance:
        raise InvalidInputError(
            folder,
            f"slices are stacked off their normal (gantry tilt or shear; max |D^T D - I| = {deviation:.3g}): resample the "
            "series to a rigid grid first",
            code="G4",
        )


def _sort_slices(folder: Path, series: list, tolerance: float) -> tuple[list, np.ndarray]:
    first = series[0][1]
    orientation = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    for path, ds in series:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=np.float64), orientation, atol=tolerance):
            raise InvalidInputError(path, f"ImageOrientationPatient differs from {series[0][0].name}", code="D2")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise InvalidInputError(path, f"size {ds.Rows}x{ds.Columns} differs from {first.Rows}x{first.Columns}", code="D2")
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=np.float64) for _, ds in series])
    order = np.argsort(positions @ normal, kind="stable")
    ordered = [series[i] for i in order]
    positions = positions[order]
    _check_spacing(folder, ordered, positions @ normal)
    return ordered, positions


def _check_spacing(folder: Path, ordered: list, along_normal: np.ndarray) -> None:
    if len(ordered) < 2:
        raise InvalidInputError(folder, "a series needs at least 2 slices to define a 3D volume", code="D2")
    gaps = np.diff(along_normal)
    if (gaps < 1e-6).any():
        k = int(np.argmin(gaps))
        names = f"{ordered[k][0].name} and {ordered[k + 1][0].name}"
        raise InvalidInputError(folder, f"duplicate slice position {along_normal[k]:.3f} mm in {names}", code="D2")
    median = float(np.median(gaps))
    deviation = np.abs(gaps - median)
    k = int(np.argmax(deviation))
    if deviation[k] > SLICE_SPACING_TOLERANCE * median:
        raise InvalidInputError(
            folder,
            f"uneven slice spacing (missing slice?): gap {gaps[k]:.3f} mm between {ordered[k][0].name} and "
            f"{ordered[k + 1][0].name} vs median {median:.3f} mm; largest deviation {deviation[k]:.3f} mm",
            code="D2",
        )


def _read_voxels(ordered: list) -> np.ndarray:
    import pydicom

    slices = []
    for path, _ in ordered:
        ds = pydicom.dcmread(path)
        try:
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # pydicom raises several types for undecodable pixel data
            raise InvalidInputError(path, f"cannot decode pixel data ({exc})", code="F2") from None
        slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
        slices.append(pixels * np.float32(slope) + np.float32(intercept))
    return np.ascontiguousarray(np.stack(slices).transpose(2, 1, 0))  # (slice, row, col) -> (col, row, slice)


def _affine(first, positions: np.ndarray) -> np.ndarray:
    orientation = np.asarray(first.ImageOrientationPatient, dtype=np.float64)
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)  # PixelSpacing = [between rows, between columns]
    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] * column_spacing
    lps[:3, 1] = orientation[3:] * row_spacing
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(positions) - 1)
    lps[:3, 3] = positions[0]
    return LPS_TO_RAS @ lps


def write_ct_series(
    volume: np.ndarray,
    affine: np.ndarray,
    folder: Path,
    patient_name: str = "PHANTOM^SEGPIPE",
    patient_id: str = "PHANTOM-0001",
    series_description: str = "segpipe phantom",
) -> list[Path]:
    """Write an (x, y, z) HU volume as a CT Image Storage series, one file per slice.

    Used by the tests and benchmarks to make DICOM input from phantoms. Slices run along the
    affine's third axis; files are named ``slice_NNNN.dcm`` in that order.

    Args:
        volume: integer HU values (stored as int16).
        affine: RAS+ affine of ``volume``; its first two columns must be orthogonal.
        folder: created if missing.
        patient_name, patient_id, series_description: written as given.

    Returns:
        The written paths, in slice order.
    """
    from pydicom.uid import generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.linalg.inv(LPS_TO_RAS) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    orientation = np.concatenate([lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]])
    shared = {
        "study": generate_uid(),
        "series": generate_uid(),
        "frame": generate_uid(),
        "patient_name": patient_name,
        "patient_id": patient_id,
        "description": series_description,
    }
    paths = []
    pixels = np.asarray(volume).astype(np.int16)
    for k in range(pixels.shape[2]):
        position = (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]
        ds = _ct_slice(pixels[:, :, k].T, orientation, position, spacing, k, shared)
        path = folder / f"slice_{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _ct_slice(pixels: np.ndarray, orientation, position, spacing, index: int, shared: dict):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    today = datetime.date(2026, 1, 1).strftime("%Y%m%d")  # fixed: phantom series carry no real dates
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = shared["patient_name"], shared["patient_id"], "", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = shared["study"], today, "120000", "1"
    ds.ReferringPhysicianName, ds.AccessionNumber = "", ""
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "CT", shared["series"], 1
    ds.SeriesDescription, ds.PatientPosition, ds.Laterality = shared["description"], "HFS", ""
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = shared["frame"], ""
    ds.Manufacturer = "segpipe"
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [round(float(v), 8) for v in orientation]
    ds.ImagePositionPatient = [round(float(v), 6) for v in position]
    ds.PixelSpacing = [round(float(spacing[1]), 6), round(float(spacing[0]), 6)]  # [row spacing, column spacing]
    ds.SliceThickness = round(float(spacing[2]), 6)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
    ds.KVP, ds.AcquisitionNumber = 120, 1
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds
