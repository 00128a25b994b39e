"""What ``segpipe predict`` accepts: a NIfTI file, a folder of NIfTI files, or a folder holding one DICOM series.

Output names follow one of two documented schemes (row S3): ``anonymous`` (default) names each
scan ``scan-<first 12 hex digits of a BLAKE2b digest>`` of the source file's bytes (of the
SeriesInstanceUID for DICOM), so identifiers in file names never reach the outputs; ``source``
keeps the file name stem (DICOM: the folder name).

Names are checked (row T8): two sources that would get the same name (``same.nii`` and ``same.nii.gz``)
are an error listing both, and a name that is empty, ``.``, ``..`` or holds a path separator is refused,
so an output never lands outside ``OUTPUT_DIR`` or on top of another scan's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.config import CheckSettings
from pipeline.data.dicom import DicomSeries, choose_series_uid, is_dicom_folder, read_dicom_series
from pipeline.data.header import DEFAULT_CHECKS
from pipeline.data.layout import NIFTI_ENDINGS, Case
from pipeline.data.nifti import nifti_stem
from pipeline.errors import DatasetError, InvalidInputError, Problem
from pipeline.io_utils import file_digest
from pipeline.preprocess.reading import read_case

Naming = Literal["anonymous", "source"]


@dataclass(frozen=True)
class ScanSource:
    """One input scan and the name its outputs get."""

    path: Path
    is_dicom: bool
    name: str


@dataclass(frozen=True)
class Scan:
    """A scan read into memory."""

    source: ScanSource
    image: np.ndarray  # float32 (C, x, y, z)
    affine: np.ndarray  # RAS+
    dicom: DicomSeries | None


def discover_scans(path: Path, naming: Naming = "anonymous", series_uid: str | None = None) -> list[ScanSource]:
    """List the scans under ``path``.

    Raises:
        InvalidInputError: ``path`` does not exist, or is a folder with neither DICOM nor NIfTI files.
    """
    path = Path(path)
    if path.is_file():
        sources = [ScanSource(path, False, nifti_stem(path))]
    elif is_dicom_folder(path):
        sources = [ScanSource(path, True, path.resolve().name)]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith(NIFTI_ENDINGS) and not p.name.startswith("."))
        if not files:
            raise InvalidInputError(path, "no NIfTI (.nii, .nii.gz) or DICOM files in this folder", code="F6")
        sources = [ScanSource(p, False, nifti_stem(p)) for p in files]
    else:
        raise InvalidInputError(path, "no such file or folder", code="F6")
    if naming == "anonymous":
        sources = [ScanSource(s.path, s.is_dicom, _anonymous_name(s, series_uid)) for s in sources]
    check_output_names([(s.name, s.path) for s in sources])
    return sources


def check_output_names(named: list[tuple[str, Path]]) -> None:
    """Refuse output names that are not a plain folder name, or that two sources share (row T8), all listed.

    Raises:
        DatasetError: one problem per unsafe name and per colliding source.
    """
    problems, by_name = [], {}
    for name, path in named:
        if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
            problems.append(
                Problem(str(path), "T8", "error", f"output name {name!r} is not a plain folder name; rename the file")
            )
        by_name.setdefault(name, []).append(path)
    for name, paths in by_name.items():
        if len(paths) > 1:
            listed = ", ".join(str(p) for p in paths)
            message = f"{len(paths)} inputs would be written to the same output {name!r} ({listed}); rename one"
            problems += [Problem(str(p), "T8", "error", message) for p in paths]
    if problems:
        raise DatasetError(problems, "output names are unsafe or collide")


def _anonymous_name(source: ScanSource, series_uid: str | None) -> str:
    if source.is_dicom:
        uid = choose_series_uid(source.path, series_uid)
        return "scan-" + hashlib.blake2b(uid.encode(), digest_size=16).hexdigest()[:12]
    return "scan-" + file_digest(source.path)[:12]


def read_scan(source: ScanSource, channels: int, series_uid: str | None = None, checks: CheckSettings = DEFAULT_CHECKS) -> Scan:
    """Read one scan with the checks of ingestion (NaN, 4D, unreadable) or of DICOM series (D1, D2).

    Args:
        source: from :func:`discover_scans`.
        channels: input channels the models expect: a 3D file holds one, a 4D file ``(x, y, z, C)`` holds several.
        series_uid: the series to read from a DICOM folder holding several.

    Raises:
        InvalidInputError: unreadable or invalid scan, or a channel count the models do not take.
    """
    if source.is_dicom:
        series = read_dicom_series(source.path, series_uid, checks.direction_tolerance)
        image, affine = series.array[None].astype(np.float32), series.affine
    else:
        series = None
        case = Case(source.name, (source.path,), None, "test", packed_channels=channels)  # several: one 4D file, as MSD
        image, affine, _ = read_case(case, set(), checks)
    if image.shape[0] != channels:
        raise InvalidInputError(source.path, f"the models take {channels} channel(s); this scan has {image.shape[0]}")
    return Scan(source, image, affine, series)
