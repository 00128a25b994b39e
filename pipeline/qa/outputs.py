"""The files ``infer`` writes beside each mask for ``evaluate`` and ``export``: one place for their names and formats.

- ``<out>/uncertainty/<case>_<key>.nii.gz``: float32 maps (``entropy``, ``mutual_information``) on the mask's grid;
- ``<out>/probabilities/<case>.npz``: the ensemble probabilities before the temperature, float16, in the box of the
  predicted foreground plus a margin (``start``, ``stop``), with the ``temperature`` to apply.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import CheckSettings
from pipeline.data.header import read_checked, same_grid
from pipeline.data.nifti import LoadedNifti, write_nifti
from pipeline.errors import InvalidInputError
from pipeline.io_utils import atomic_path

UNCERTAINTY_DIR = "uncertainty"
PROBABILITY_DIR = "probabilities"
UNCERTAINTY_KEYS = ("entropy", "mutual_information")


def padded_box(mask: np.ndarray, spacing, margin_mm: float, whole_if_empty: bool) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of the box around ``mask`` grown by ``margin_mm`` per axis and clipped to the array; an empty mask
    gives the whole array (``whole_if_empty``) or an empty box."""
    voxels = np.argwhere(mask)
    if not voxels.size:
        return np.zeros(mask.ndim, dtype=int), (np.asarray(mask.shape) if whole_if_empty else np.zeros(mask.ndim, dtype=int))
    margin = np.ceil(margin_mm / np.asarray(spacing, dtype=float)).astype(int)
    return np.maximum(voxels.min(axis=0) - margin, 0), np.minimum(voxels.max(axis=0) + margin + 1, mask.shape)


def box_slices(start, stop) -> tuple[slice, ...]:
    """The index of the box from ``start`` (inclusive) to ``stop`` (exclusive) per axis, as :func:`padded_box` gives it."""
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))


def write_uncertainty_maps(folder: Path, case_id: str, maps: dict[str, np.ndarray], affine: np.ndarray) -> None:
    """Write each map as ``<folder>/uncertainty/<case>_<key>.nii.gz`` (float32, the mask's affine)."""
    for key, values in maps.items():
        write_nifti(Path(folder) / UNCERTAINTY_DIR / f"{case_id}_{key}.nii.gz", values, affine, np.float32)


def read_uncertainty_maps(folder: Path, case_id: str, mask: LoadedNifti, checks: CheckSettings) -> dict[str, np.ndarray]:
    """The uncertainty maps written beside a mask (each checked to lie on the mask's grid); absent ones are left out.

    Raises:
        InvalidInputError: a map that does not lie on its mask's grid (G3), or an unreadable one.
    """
    maps = {}
    for key in UNCERTAINTY_KEYS:
        path = Path(folder) / UNCERTAINTY_DIR / f"{case_id}_{key}.nii.gz"
        if path.is_file():
            loaded = read_checked(path, case_id, checks)
            if not same_grid(loaded, mask, checks):
                raise InvalidInputError(path, "uncertainty map does not lie on its mask's grid", case_id, "G3")
            maps[key] = np.asarray(loaded.data, dtype=np.float32)
    return maps


def save_probability_box(folder: Path, case_id: str, probabilities, label, spacing, margin_mm: float, temperature: float):
    """Save ``probabilities`` (C, x, y, z) as float16 in the box of ``label``'s foreground plus ``margin_mm``."""
    start, stop = padded_box(label > 0, spacing, margin_mm, whole_if_empty=False)
    box = box_slices(start, stop)
    with atomic_path(Path(folder) / PROBABILITY_DIR / f"{case_id}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, probabilities=probabilities[(slice(None), *box)].astype(np.float16), start=start, stop=stop,
            temperature=np.float64(temperature),
        )  # fmt: skip


def load_probability_box(folder: Path, case_id: str) -> tuple[np.ndarray, tuple[slice, ...], float] | None:
    """(float16 probabilities, their box, the temperature) saved for a case, or ``None``."""
    path = Path(folder) / PROBABILITY_DIR / f"{case_id}.npz"
    if not path.is_file():
        return None
    with np.load(path) as saved:
        box = box_slices(saved["start"], saved["stop"])
        return saved["probabilities"], box, float(saved["temperature"])
