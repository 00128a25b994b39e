"""Checked reading of one case (all channels and label), shared by plan, preprocess, infer, predict and crossval.

Every file passes the same header checks as ``verify`` (:func:`pipeline.data.header.require_valid_header`)
with the same tolerances (``checks`` in the config).
"""

from __future__ import annotations

import numpy as np

from pipeline.config import CheckSettings
from pipeline.data.header import DEFAULT_CHECKS, read_checked, same_grid
from pipeline.data.layout import Case
from pipeline.data.nifti import LoadedNifti, channel_volumes, label_array
from pipeline.errors import InvalidInputError
from pipeline.parallel import thread_map


def read_case(
    case: Case, declared_labels: set[int], checks: CheckSettings = DEFAULT_CHECKS, keep_integers: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a case's channels and label and check they fit together.

    The files are read side by side (:func:`pipeline.parallel.thread_map`). With ``keep_integers``, integer voxel data
    (CT stored as int16) keeps its type instead of becoming float32: half the memory, and no conversion of voxels that
    preprocessing crops away; the values are the same.

    Returns:
        (float32 image (C, x, y, z) (integers kept with ``keep_integers``), the image affine, label (x, y, z) as uint8,
        or uint16 when an id exceeds 255, or ``None``).

    Raises:
        InvalidInputError: unreadable file, bad header (G4, G9, G11, V8), non-3D data (G8), NaN/Inf (V1), channel or label
            geometry that differs from the first channel (G8, G1, G3), bad label values (V3, V4).
    """
    files = [*case.images, *([case.label] if case.label else [])]
    loaded_files = thread_map(lambda path: read_checked(path, case.case_id, checks, is_label=path == case.label), files)
    channels, first = [], None
    for path, loaded in zip(case.images, loaded_files):
        for data in channel_volumes(loaded, case.packed_channels, case.case_id):
            if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
                raise InvalidInputError(path, f"{int((~np.isfinite(data)).sum())} NaN/Inf voxels", case.case_id, "V1")
            if first is not None and (data.shape != channels[0].shape or not same_grid(loaded, first, checks)):
                raise InvalidInputError(
                    path,
                    f"channel geometry differs from {case.images[0].name}: shape {data.shape} vs {channels[0].shape}, "
                    f"affine {np.round(loaded.affine, 4).tolist()} vs {np.round(first.affine, 4).tolist()}",
                    case.case_id,
                    "G8",
                )
            channels.append(data if keep_integers and data.dtype.kind in "iu" else data.astype(np.float32))
            first = loaded if first is None else first
    label = _check_label(case, loaded_files[-1], first, channels[0].shape, declared_labels, checks) if case.label else None
    image = stack_channels(channels)
    return image, first.affine, label


def _check_label(
    case: Case, loaded: LoadedNifti, image: LoadedNifti, shape: tuple[int, ...], declared: set[int], checks: CheckSettings
) -> np.ndarray:
    label = label_array(loaded, declared, case.case_id)
    if label.shape != tuple(shape):
        raise InvalidInputError(case.label, f"shape {label.shape} differs from image shape {tuple(shape)}", case.case_id, "G1")
    if not same_grid(loaded, image, checks):
        raise InvalidInputError(
            case.label,
            f"affine {np.round(loaded.affine, 4).tolist()} differs from image affine {np.round(image.affine, 4).tolist()}",
            case.case_id,
            "G3",
        )
    return label


def stack_channels(channels: list[np.ndarray]) -> np.ndarray:
    """Per-channel volumes as one (C, x, y, z) array; a single channel becomes a view, not a second copy."""
    return channels[0][None] if len(channels) == 1 else np.stack(channels)
