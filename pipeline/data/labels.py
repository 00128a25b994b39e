"""The one label registry: id, name, colour and SNOMED CT code, feeding every exporter and report."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Colours follow 3D Slicer's GenericAnatomyColors; codes are SNOMED CT concept ids.
KNOWN_STRUCTURES: dict[str, tuple[tuple[int, int, int], str | None, str]] = {
    "background": ((0, 0, 0), None, "Background"),
    "liver": ((221, 130, 101), "10200004", "Liver"),
    "spleen": ((157, 108, 162), "78961009", "Spleen"),
    "kidney": ((185, 102, 83), "64033007", "Kidney"),
    "pancreas": ((249, 180, 111), "15776009", "Pancreas"),
    "aorta": ((224, 97, 76), "15825003", "Aorta"),
}
MAX_LABEL_ID = 65535
FEW_CANDIDATES = 64  # below this span of values, present_values tests each value instead of counting


def present_values(array: np.ndarray) -> list[int]:
    """The distinct values of an integer-valued array, ascending: ``np.unique(array)`` as ints, the one way the pipeline
    lists the labels present in a map.

    Integer arrays are read in memory order (NIfTI data is Fortran-ordered). The minimum and maximum are present by
    definition; when at most :data:`FEW_CANDIDATES` values lie between them (every real label set), each one is tested
    with an equality scan that allocates only a boolean mask, about 5x faster than ``np.bincount`` (which first casts a
    CT-sized uint8 map to 8-byte integers). Wider spans up to :data:`MAX_LABEL_ID` + 1 are counted with
    ``np.bincount``; anything else (floats holding integers, wide ranges) goes through ``np.unique``.
    """
    if array.size == 0:
        return []
    if array.dtype.kind in "ui":
        flat = array.ravel(order="K")
        low, high = int(flat.min()), int(flat.max())
        if high - low <= FEW_CANDIDATES:
            return [v for v in range(low, high + 1) if v in (low, high) or bool((flat == v).any())]
        if high - low <= MAX_LABEL_ID:
            shifted = flat if low == 0 else flat.astype(np.int64) - low
            return [v + low for v in np.flatnonzero(np.bincount(shifted, minlength=high - low + 1)).tolist()]
    return [int(v) for v in np.unique(array)]


def label_dtype(num_classes: int) -> np.dtype:
    """The one storage type of label maps: uint8 for ids up to 255, uint16 above (ids never wrap around).

    Raises:
        ValueError: an id above 65535 (``num_classes`` = largest id + 1).
    """
    if num_classes > MAX_LABEL_ID + 1:
        raise ValueError(f"label id {num_classes - 1} exceeds {MAX_LABEL_ID}, the largest id a uint16 label map holds")
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


_FALLBACK_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


@dataclass(frozen=True)
class Label:
    """One class of a label map."""

    value: int
    name: str
    color: tuple[int, int, int]
    snomed_code: str | None
    snomed_meaning: str


@dataclass(frozen=True)
class LabelRegistry:
    """Ordered labels of a dataset; ``labels[0]`` is background (value 0)."""

    labels: tuple[Label, ...]

    @classmethod
    def from_mapping(cls, mapping: dict[int, str]) -> LabelRegistry:
        """Build from ``{value: name}``; known anatomy gets Slicer colours and SNOMED codes."""
        labels = []
        for value in sorted(mapping):
            name = mapping[value]
            color, code, meaning = KNOWN_STRUCTURES.get(
                name.lower(), (_FALLBACK_PALETTE[value % len(_FALLBACK_PALETTE)], None, name)
            )
            labels.append(Label(value, name, color, code, meaning))
        return cls(tuple(labels))

    @property
    def values(self) -> set[int]:
        """The set of declared label values."""
        return {label.value for label in self.labels}

    @property
    def num_classes(self) -> int:
        """Number of classes including background (max value + 1)."""
        return max(self.values) + 1

    def foreground(self) -> tuple[Label, ...]:
        """All labels except background."""
        return tuple(label for label in self.labels if label.value != 0)
