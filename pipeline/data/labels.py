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


@dataclass(frozen=True)
class Region:
    """A named union of label values (nnU-Net v2's region-based labels, e.g. BraTS's tumour core = {2, 3})."""

    name: str
    values: tuple[int, ...]


IGNORE_LABEL = "ignore"  # nnU-Net v2's name for voxels that do not count in the loss (sparse annotation)


def labels_and_regions(declared: dict[str, object]) -> tuple[dict[int, str], tuple[Region, ...]]:
    """Read nnU-Net v2's ``labels`` (``{name: value}``, or ``{name: [values]}`` for region-based datasets) into the
    ``{value: name}`` the label maps hold, and the regions.

    A region-based ``dataset.json`` (nnU-Net's BraTS: ``"whole tumor": [1, 2, 3], "tumor core": [2, 3],
    "enhancing tumor": 3``) still stores one integer per voxel; segpipe trains and predicts those values (softmax, as
    for MSD's integer labels) and scores each region as the union of its values. A value is named after the region
    that is exactly it (``enhancing tumor``), else after the smallest region holding it less the largest regions nested
    inside that one (``tumor core without enhancing tumor``), else ``label <value>``. Without lists, the regions are
    empty and the names are as declared.

    Raises:
        ValueError: a value that is not a non-negative integer (or a list of them), a region holding background (0), or
            nnU-Net's ``ignore`` label (sparse annotation is not supported: its voxels would be trained as a class).
    """
    if IGNORE_LABEL in declared:
        raise ValueError(f"label {IGNORE_LABEL!r} (nnU-Net's ignore label, for sparse annotation) is not supported: "
                         "its voxels would be trained and scored as a class; label every voxel")  # fmt: skip
    groups = {str(name): _label_values(name, value) for name, value in declared.items()}
    if all(not isinstance(value, list) for value in declared.values()):
        return {values[0]: name for name, values in groups.items()}, ()
    regions = tuple(Region(name, values) for name, values in groups.items() if values != (0,))
    if any(0 in region.values for region in regions):
        raise ValueError(f"a region may not hold background (0): {[r.name for r in regions if 0 in r.values]}")
    values = sorted({v for region in regions for v in region.values})
    return {0: "background", **{v: _value_name(v, regions) for v in values}}, regions


def _label_values(name, value) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in items):
        raise ValueError(f"label {name!r}: {value!r} is not a non-negative integer or a list of them")
    return tuple(sorted(set(items)))


def _value_name(value: int, regions: tuple[Region, ...]) -> str:
    holding = sorted((r for r in regions if value in r.values), key=lambda r: len(r.values))
    if holding and holding[0].values == (value,):
        return holding[0].name
    smallest = set(holding[0].values)
    nested = [r for r in regions if set(r.values) < smallest]
    largest = [r for r in nested if not any(set(r.values) < set(o.values) for o in nested)]
    if set().union(*(set(r.values) for r in largest)) == smallest - {value}:
        return f"{holding[0].name} without {' or '.join(r.name for r in largest)}"
    return f"label {value}"
