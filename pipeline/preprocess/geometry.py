"""Orientation, cropping and resampling of voxel arrays, and their exact inverse.

Conventions (documented in the README):
* arrays are indexed like their affine: (x, y, z) for volumes, (C, x, y, z) for channel stacks;
* orientation to RAS uses nibabel's orientation transforms (flips and axis swaps only, so it is
  exact and invertible; an oblique grid keeps its rotation, as in MONAI's ``Orientation``);
* resampling works in the voxel frame: the new grid covers the same field of view, corner-aligned
  (first voxel edge on first voxel edge), at exactly the target spacing, with nearest-voxel
  extrapolation past the far edge. The preprocessed affine is computed exactly from it. Preprocessing
  resamples images and labels from each output voxel's 2 x 2 x 2 source neighbours
  (:func:`resample_linear`, :func:`resample_labels`); restoring to the original grid and the other
  interpolators use SimpleITK (:func:`resample_volume`), on the same grid mapping.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import nibabel.orientations as nio
import numpy as np
import SimpleITK as sitk

from pipeline.data.labels import label_dtype, present_values
from pipeline.parallel import thread_map

RAS_ORNT = nio.axcodes2ornt(("R", "A", "S"))
_INTERPOLATORS = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}


@dataclass(frozen=True)
class CaseGeometryRecord:
    """Everything needed to map a preprocessed array back onto the original scan's grid."""

    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    to_ras: np.ndarray  # nibabel ornt transform from the original axes to RAS axes
    crop_start: tuple[int, int, int]  # in RAS-oriented voxel indices
    crop_stop: tuple[int, int, int]
    source_spacing: tuple[float, float, float]  # RAS-oriented spacing before resampling
    target_spacing: tuple[float, float, float]
    preprocessed_shape: tuple[int, int, int]
    preprocessed_affine: np.ndarray

    @property
    def cropped_shape(self) -> tuple[int, int, int]:
        """Shape of the RAS-oriented crop before resampling."""
        return tuple(b - a for a, b in zip(self.crop_start, self.crop_stop))

    def to_json(self) -> dict:
        """JSON form (floats written with full precision, so the round trip is exact)."""
        return {
            "original_affine": self.original_affine.tolist(),
            "original_shape": list(self.original_shape),
            "to_ras": self.to_ras.tolist(),
            "crop_start": list(self.crop_start),
            "crop_stop": list(self.crop_stop),
            "source_spacing": list(self.source_spacing),
            "target_spacing": list(self.target_spacing),
            "preprocessed_shape": list(self.preprocessed_shape),
            "preprocessed_affine": self.preprocessed_affine.tolist(),
        }

    @classmethod
    def from_json(cls, payload: dict) -> CaseGeometryRecord:
        """Inverse of :meth:`to_json`."""
        ints = lambda key: tuple(int(v) for v in payload[key])  # noqa: E731
        floats = lambda key: tuple(float(v) for v in payload[key])  # noqa: E731
        return cls(
            np.asarray(payload["original_affine"], dtype=np.float64),
            ints("original_shape"),
            np.asarray(payload["to_ras"], dtype=np.float64),
            ints("crop_start"),
            ints("crop_stop"),
            floats("source_spacing"),
            floats("target_spacing"),
            ints("preprocessed_shape"),
            np.asarray(payload["preprocessed_affine"], dtype=np.float64),
        )


def reorient_to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flip/permute the spatial axes of ``array`` (x, y, z[, ...]) so they run closest to R, A, S.

    Returns:
        (reoriented array, its affine, the ornt transform that was applied).
    """
    transform = nio.ornt_transform(nio.io_orientation(affine), RAS_ORNT)
    reoriented = nio.apply_orientation(array, transform)
    new_affine = affine @ nio.inv_ornt_aff(transform, array.shape[:3])
    return reoriented, new_affine, transform


def ras_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing along the R, A, S-closest axes (the order after :func:`reorient_to_ras`), without touching data."""
    transform = nio.ornt_transform(nio.io_orientation(affine), RAS_ORNT)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    out = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(transform):
        out[int(target)] = float(spacing[axis])
    return tuple(out)


def bounding_box(mask: np.ndarray, margin: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bounding box (start, stop) of ``mask`` grown by ``margin`` voxels per axis; whole array if empty."""
    if not mask.any():
        return (0, 0, 0), tuple(int(s) for s in mask.shape)
    start, stop = [], []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        start.append(int(max(0, hits[0] - margin[axis])))
        stop.append(int(min(mask.shape[axis], hits[-1] + 1 + margin[axis])))
    return tuple(start), tuple(stop)


def crop_box(mask: np.ndarray, spacing, margin_mm: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The crop every path uses: the bounding box of ``mask`` grown by ``margin_mm`` (rounded up to whole voxels)."""
    return bounding_box(mask, np.ceil(margin_mm / np.asarray(spacing)).astype(int))


def resampled_shape(shape: tuple[int, ...], source_spacing, target_spacing) -> tuple[int, int, int]:
    """Number of voxels covering the same field of view at the target spacing (at least 1)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, source_spacing, target_spacing))


def resample_volume(volume: np.ndarray, source_spacing, target_spacing, target_shape, interpolation: str) -> np.ndarray:
    """Resample a spatial (x, y, z) or channel-first (C, x, y, z) array between corner-aligned grids.

    Args:
        volume: array to resample.
        source_spacing, target_spacing: voxel sizes (mm) along x, y, z.
        target_shape: output spatial shape.
        interpolation: ``nearest``, ``linear`` or ``bspline``.

    Returns:
        The resampled array (float32 unless nearest, which keeps the dtype).
    """
    if volume.ndim == 4:
        return np.stack([resample_volume(c, source_spacing, target_spacing, target_shape, interpolation) for c in volume])
    array = np.ascontiguousarray(volume if interpolation == "nearest" else volume.astype(np.float32, copy=False))
    # SimpleITK reads a C-ordered (x, y, z) array as an image of size (z, y, x); with an identity
    # direction the resampling is the same along reversed axes, so pass reversed spacings and skip
    # two full-volume transposes.
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(source_spacing)])
    origin = [0.5 * (float(t) - float(s)) for s, t in zip(reversed(source_spacing), reversed(target_spacing))]
    out = sitk.Resample(
        image,
        [int(n) for n in reversed(target_shape)],
        sitk.Transform(),
        _INTERPOLATORS[interpolation],
        origin,
        [float(t) for t in reversed(target_spacing)],
        np.eye(3).ravel().tolist(),
        0.0,
        image.GetPixelID(),
        True,
    )
    return sitk.GetArrayFromImage(out)


def crop_resampled_affine(ras_affine: np.ndarray, crop_start, source_spacing, target_spacing) -> np.ndarray:
    """Exact affine of the resampled crop: index j maps to crop index j*r + (r-1)/2 with r = target/source."""
    shift = np.eye(4)
    shift[:3, 3] = crop_start
    ratio = np.asarray(target_spacing, dtype=np.float64) / np.asarray(source_spacing, dtype=np.float64)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(ratio)
    scale[:3, 3] = 0.5 * (ratio - 1.0)
    return ras_affine @ shift @ scale


def restore_probabilities(
    probabilities: np.ndarray, record: CaseGeometryRecord, accumulate_into: np.ndarray | None = None
) -> np.ndarray:
    """Map channel-first class probabilities (C, x, y, z) on the preprocessed grid to the original grid.

    Each channel is resampled back onto the crop (linear), placed in the whole RAS volume (outside
    the crop background gets probability 1) and un-reoriented, one channel at a time so that a
    CT-sized scan needs one original-size channel of scratch memory.

    Args:
        probabilities: (C, *record.preprocessed_shape).
        record: the case's geometry record.
        accumulate_into: (C, *original_shape) float32 array to add into (ensembles), or ``None``.

    Returns:
        (C, *original_shape) float32: ``accumulate_into`` plus these probabilities.
    """
    out = accumulate_into
    if out is None:
        out = np.zeros((probabilities.shape[0], *record.original_shape), dtype=np.float32)
    for channel in range(probabilities.shape[0]):
        out[channel] += restore_scalar_map(probabilities[channel], record, outside=1.0 if channel == 0 else 0.0)
    return out


def restore_scalar_map(values: np.ndarray, record: CaseGeometryRecord, outside: float = 0.0) -> np.ndarray:
    """Map one scalar map (x', y', z') on the preprocessed grid to the original grid: linear resampling onto the crop,
    ``outside`` beyond it, then the original axis order (probability channels, entropy, mutual information)."""
    cropped = resample_volume(values, record.target_spacing, record.source_spacing, record.cropped_shape, "linear")
    return place_on_original_grid(cropped, record, outside)


def place_on_original_grid(cropped: np.ndarray, record: CaseGeometryRecord, outside: float | int = 0) -> np.ndarray:
    """``cropped`` (RAS-oriented, ``record.cropped_shape``) put back into the whole scan in the scan's own axis order,
    ``outside`` everywhere else; the dtype of ``cropped``.

    The result is Fortran-ordered, the order NIfTI stores voxels in, so :func:`pipeline.data.nifti.write_nifti` writes it
    without a transposing copy (on a 512 x 512 x 300 mask about 2 s less). The crop is written through a RAS-oriented view
    of it (flips and transposes only), so no whole-volume copy is made.
    """
    full = np.full(record.original_shape, outside, dtype=cropped.dtype, order="F")
    ras_view = nio.apply_orientation(full, record.to_ras)
    ras_view[tuple(slice(a, b) for a, b in zip(record.crop_start, record.crop_stop))] = cropped
    return full


def restore_argmax(probabilities: np.ndarray, record: CaseGeometryRecord) -> np.ndarray:
    """``restore_probabilities(probabilities, record).argmax(0)`` without building full-size probabilities.

    Exact shortcut: a linearly interpolated value is a convex combination of its 2x2x2 coarse neighbours (the cell
    :func:`linear_taps` gives each fine voxel), so where all of them have the same argmax k, the interpolated argmax is k
    as well. Only the fine voxels of mixed cells (near class boundaries) are interpolated, with the same corner-aligned
    mapping and nearest extrapolation as :func:`resample_volume`. For a CT-sized scan this avoids C full-size float32
    channels (about 4 GB for 4 classes at 512 x 512 x 300); about 5 % of its crop lies in mixed cells.

    Returns:
        label map (:func:`pipeline.data.labels.label_dtype`) with ``record.original_shape``, Fortran-ordered
        (:func:`place_on_original_grid`; channel index = label value; background outside the crop).
    """
    from scipy import ndimage

    dtype = label_dtype(probabilities.shape[0])
    coarse = probabilities.argmax(axis=0).astype(dtype)
    taps = [
        linear_taps(n_coarse, coarse_spacing, fine_spacing, n_fine)
        for n_coarse, coarse_spacing, fine_spacing, n_fine in zip(
            coarse.shape, record.target_spacing, record.source_spacing, record.cropped_shape
        )
    ]
    lows = [low for low, _, _ in taps]
    # = coarse[np.ix_(*lows)], the cell's label where the cell is unanimous; gathered Fortran-ordered like the output
    # (placing a C-ordered crop into it would transpose 50 M voxels of a CT-sized scan: 0.25 s more)
    cropped = _take_per_axis(coarse.T, lows[::-1]).T
    points = _fine_voxels_of_cells(np.argwhere(_mixed_cells(coarse)), lows)
    if points[0].size:
        positions = np.stack([low[index] + weight[index] for (low, _, weight), index in zip(taps, points)])

        def interpolate(channel: np.ndarray) -> np.ndarray:  # one channel per thread: SciPy's interpolation releases the GIL
            return ndimage.map_coordinates(channel, positions, order=1, mode="nearest")

        values = np.stack(thread_map(interpolate, list(probabilities)))
        cropped[points] = values.argmax(axis=0).astype(dtype)
    return place_on_original_grid(cropped, record)


def _mixed_cells(coarse: np.ndarray) -> np.ndarray:
    """Per 2x2x2 cell of ``coarse`` (indexed by its lower corner; one cell along an axis of length 1): not all equal."""
    highest, lowest = coarse, coarse
    for axis in range(coarse.ndim):
        n = coarse.shape[axis]
        if n > 1:
            first, second = (slice(None),) * axis + (slice(0, n - 1),), (slice(None),) * axis + (slice(1, n),)
            highest = np.maximum(highest[first], highest[second])
            lowest = np.minimum(lowest[first], lowest[second])
    return highest != lowest


def _fine_voxels_of_cells(cells: np.ndarray, lows: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Indices (per axis) of every fine voxel whose cell (``lows[axis][index]``, non-decreasing) is one of ``cells``
    (M, ndim): each cell's fine voxels form a box, enumerated here without scanning the fine grid."""
    starts = [np.searchsorted(low, cells[:, axis], "left") for axis, low in enumerate(lows)]
    counts = [np.searchsorted(low, cells[:, axis], "right") - start for axis, (low, start) in enumerate(zip(lows, starts))]
    sizes = np.prod(np.stack(counts), axis=0) if len(cells) else np.zeros(0, dtype=np.intp)
    owner = np.repeat(np.arange(len(cells)), sizes)
    local = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    indices = []
    for axis in reversed(range(len(lows))):  # the last axis varies fastest inside a cell
        count = counts[axis][owner]
        indices.append(starts[axis][owner] + local % count)
        local = local // count
    return tuple(reversed(indices))


def _take_per_axis(array: np.ndarray, indices: list[np.ndarray]) -> np.ndarray:
    """``array[np.ix_(*indices)]`` as one ``np.take`` per axis: the same values, about 40 % faster on CT-sized grids."""
    for axis, index in enumerate(indices):
        array = np.take(array, index, axis=axis)
    return array


def resample_labels(label: np.ndarray, source_spacing, target_spacing, target_shape, num_classes: int) -> np.ndarray:
    """Resample a label map as one-hot channels (linear) then argmax: ``resample_volume(one_hot, ..., "linear").argmax(0)``.

    The one-hot channels are never built. Linear interpolation gives each output voxel the weighted vote of its 2 x 2 x 2
    source neighbours (:func:`source_neighbours`), so each class present scores the trilinear weights of the neighbours
    that hold it. Classes are visited in increasing order and only a strictly larger float32 score takes a voxel, as
    argmax keeps the first maximum; a class absent from the map never wins. Where the eight neighbours agree (almost
    every voxel) their class is the only one that scores, so it is taken directly, and the vote runs on the other
    voxels only. The work grows with the output grid, not the source: on a CT-sized crop it replaces one full-volume
    SimpleITK pass per class.
    """
    dtype = label_dtype(num_classes)
    target_shape = tuple(int(n) for n in target_shape)
    taps = [linear_taps(*args) for args in zip(label.shape, source_spacing, target_spacing, target_shape)]
    neighbours = source_neighbours(label, taps)
    first = neighbours[(0, 0, 0)]
    mixed = np.zeros(target_shape, dtype=bool)
    for values in neighbours.values():
        mixed |= values != first
    out = first.astype(dtype, order="C")  # a C-ordered copy: np.save writes it in one pass
    where = np.nonzero(mixed)
    if where[0].size:
        out[where] = _vote(
            {sides: values[where] for sides, values in neighbours.items()}, _mixed_weights(taps, where), present_values(label)
        ).astype(dtype)
    return out


def _mixed_weights(taps, where: tuple[np.ndarray, ...]) -> dict[tuple[int, int, int], np.ndarray]:
    """The trilinear weight of each neighbour (lower tap = side 0, upper = 1 per axis) at the voxels ``where``, the
    per-axis factors multiplied in x, y, z order in float64."""
    weights = {}
    for sides in itertools.product((0, 1), repeat=3):
        weight = np.ones(where[0].size)
        for axis in range(3):
            upper = taps[axis][2][where[axis]]
            weight = weight * (upper if sides[axis] else 1.0 - upper)
        weights[sides] = weight
    return weights


def _vote(neighbours: dict, weights: dict, values) -> np.ndarray:
    """The class with the largest summed float32 weight among ``neighbours`` (first on a tie), per voxel."""
    size = next(iter(neighbours.values())).size
    best = np.full(size, -1.0, dtype=np.float32)
    out = np.zeros(size, dtype=np.int64)
    for value in values:
        score = np.zeros(size, dtype=np.float64)
        for sides, held in neighbours.items():
            score += np.where(held == value, weights[sides], 0.0)
        score = score.astype(np.float32)
        wins = score > best
        out[wins] = value
        np.maximum(best, score, out=best)
    return out


def resample_linear(volume: np.ndarray, source_spacing, target_spacing, target_shape, pointwise=None) -> np.ndarray:
    """``resample_volume(pointwise(volume), ..., "linear")`` from the 2 x 2 x 2 source neighbours of each output voxel.

    The same float32 values as SimpleITK's linear resampling: the neighbours are interpolated in float64 in ITK's order
    (along z, the fastest axis of the array ITK sees, then y, then x) and rounded to float32 once. The positions are
    computed here rather than by ITK, so a value can differ in its last float32 bit where the float64 result lies on or
    within a few float64 steps of a float32 rounding midpoint (exact halves; on the CT phantom 1-4 voxels of a few
    million per case). A pointwise map (an intensity
    normalisation) commutes with the gathering, so ``pointwise`` runs on the gathered neighbours only, never on the whole
    source: a CT-sized crop is neither normalised in full nor copied into SimpleITK.

    Differs from SimpleITK where an output voxel's centre falls exactly on the far edge of the source (index n - 0.5:
    e.g. an odd number of slices halved), where ITK switches to nearest-neighbour extrapolation on every axis; here
    linear interpolation with nearest extrapolation holds everywhere.
    """
    target_shape = tuple(int(n) for n in target_shape)
    taps = [linear_taps(*args) for args in zip(volume.shape, source_spacing, target_spacing, target_shape)]
    neighbours = source_neighbours(volume, taps)
    if pointwise is not None:
        neighbours = {sides: np.asarray(pointwise(values), dtype=np.float32) for sides, values in neighbours.items()}
    distance = [_along(taps[axis][2], axis) for axis in range(3)]

    def lerp(low: np.ndarray, high: np.ndarray, axis: int) -> np.ndarray:
        # low + (high - low) * d, computed in place in one float64 buffer (the same operations, no temporaries)
        out = np.subtract(high, low, dtype=np.float64)
        out *= distance[axis]
        out += low
        return out

    along_z = {(a, b): lerp(neighbours[(a, b, 0)], neighbours[(a, b, 1)], 2) for a in (0, 1) for b in (0, 1)}
    along_y = {a: lerp(along_z[(a, 0)], along_z[(a, 1)], 1) for a in (0, 1)}
    return lerp(along_y[0], along_y[1], 0).astype(np.float32, order="C")  # C order: np.save writes it in one pass


def source_neighbours(volume: np.ndarray, taps) -> dict[tuple[int, int, int], np.ndarray]:
    """The 2 x 2 x 2 source neighbours of every output voxel: {(lower 0 / upper 1 tap along x, y, z): values on the output
    grid}, gathered one axis at a time (each gather shrinks the data) from taps of :func:`linear_taps`.

    Axes go from the largest stride to the smallest (NIfTI volumes are Fortran-ordered: whole planes are copied first,
    then rows, and the element-wise gather along the contiguous axis runs last, on the smallest arrays), and gathering is
    done by indexing, which keeps the memory order (``np.take`` would write C order: a slow transposing copy).
    """
    found: dict[tuple[tuple[int, int], ...], np.ndarray] = {(): volume}
    for axis in sorted(range(3), key=lambda a: -abs(volume.strides[a])):
        found = {
            (*key, (axis, side)): values[(slice(None),) * axis + (taps[axis][side],)]
            for key, values in found.items()
            for side in (0, 1)
        }
    return {tuple(dict(key)[axis] for axis in range(3)): values for key, values in found.items()}


def _along(values: np.ndarray, axis: int) -> np.ndarray:
    """A per-index array of one axis shaped to broadcast along that axis of a 3D grid."""
    shape = [1, 1, 1]
    shape[axis] = -1
    return values.reshape(shape)


def linear_taps(
    n_source: int, source_spacing: float, target_spacing: float, n_target: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index along one axis: the lower and upper source neighbours and the upper one's weight.

    The grids are corner-aligned as in :func:`resample_volume`: output index j lies at source index
    (j + 0.5) * target / source - 0.5, clamped to the first and last source voxel (nearest extrapolation).
    """
    position = np.clip((np.arange(n_target) + 0.5) * (float(target_spacing) / float(source_spacing)) - 0.5, 0, n_source - 1)
    low = np.minimum(np.floor(position).astype(np.intp), max(n_source - 2, 0))
    high = np.minimum(low + 1, n_source - 1)
    return low, high, position - low


def restore_label_map(label: np.ndarray, record: CaseGeometryRecord, num_classes: int) -> np.ndarray:
    """Map a preprocessed label map back to the original grid as inference restores a prediction: its one-hot channels
    through :func:`restore_argmax` (linear, argmax), as uint8 (uint16 above 255)."""
    one_hot = np.stack([(label == c).astype(np.float32) for c in range(num_classes)])
    return restore_argmax(one_hot, record)
