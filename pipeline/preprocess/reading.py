"""Checked reading of one case (all channels and label), shared by the fingerprint and the preprocess passes."""

from __future__ import annotations

import numpy as np

from pipeline.data.layout import Case
from pipeline.data.nifti import label_array, read_nifti, squeeze_to_3d
from pipeline.errors import InvalidInputError

AFFINE_TOLERANCE_MM = 1e-3


def read_case(case: Case, declared_labels: set[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a case's channels and label and check they fit together.

    Returns:
        (float32 image (C, x, y, z), the image affine, uint8 label (x, y, z) or ``None``).

    Raises:
        InvalidInputError: unreadable file, non-3D data (G8), NaN/Inf (V1), channel or label
            geometry that differs from the first channel (G8, G1, G3), bad label values (V3, V4).
    """
    channels, affine = [], None
    for path in case.images:
        loaded = read_nifti(path, case.case_id)
        data = squeeze_to_3d(loaded, case.case_id)
        if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
            raise InvalidInputError(path, f"{int((~np.isfinite(data)).sum())} NaN/Inf voxels", case.case_id, "V1")
        if affine is not None and (data.shape != channels[0].shape or not _same(loaded.affine, affine)):
            raise InvalidInputError(
                path,
                f"channel geometry differs from {case.images[0].name}: shape {data.shape} vs {channels[0].shape}",
                case.case_id,
                "G8",
            )
        channels.append(data.astype(np.float32))
        affine = loaded.affine if affine is None else affine
    label = _read_label(case, channels[0].shape, affine, declared_labels) if case.label else None
    return np.stack(channels), affine, label


def _read_label(case: Case, shape: tuple[int, ...], affine: np.ndarray, declared: set[int]) -> np.ndarray:
    loaded = read_nifti(case.label, case.case_id)
    label = label_array(loaded, declared, case.case_id)
    if label.shape != tuple(shape):
        raise InvalidInputError(case.label, f"shape {label.shape} differs from image shape {tuple(shape)}", case.case_id, "G1")
    if not _same(loaded.affine, affine):
        raise InvalidInputError(
            case.label,
            f"affine {np.round(loaded.affine, 4).tolist()} differs from image affine {np.round(affine, 4).tolist()}",
            case.case_id,
            "G3",
        )
    return label


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, atol=AFFINE_TOLERANCE_MM, rtol=0))
