"""Geometry round trips through reorientation, cropping and resampling (LPS, oblique, permuted axes)."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest

from pipeline.config import SynthSettings
from pipeline.data.layout import load_dataset
from pipeline.data.phantom import generate_phantom_dataset
from pipeline.planning.run import plan_dataset
from pipeline.preprocess.geometry import (
    CaseGeometryRecord,
    place_on_original_grid,
    ras_spacing,
    reorient_to_ras,
    resample_volume,
    restore_label_map,
)
from pipeline.preprocess.run import make_plan, preprocess_case
from tests.conftest import data_config, dice


def _plan(dataset, tmp_path, spacing):
    """The preprocessing of one grid of ``spacing`` (normalisation from the dataset's plan)."""
    cfg = data_config(dataset.root, tmp_path / "pre")
    return make_plan(dataset, cfg.preprocess, plan_dataset(cfg), spacing, tmp_path / "pre")


def _case(dataset, orientation_test):
    for case in dataset.split("train"):
        affine = nib.load(case.images[0]).affine
        if orientation_test(affine):
            return case
    raise AssertionError("no such case in the phantom")


IS_LPS = lambda a: nib.aff2axcodes(a) == ("L", "P", "S") and np.allclose(np.abs(a[:3, :3]), np.diag(np.abs(np.diag(a[:3, :3]))))  # noqa: E731
IS_OBLIQUE = lambda a: np.abs(a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)).max() < 0.999  # noqa: E731


@pytest.mark.parametrize("which", [IS_LPS, IS_OBLIQUE], ids=["LPS", "oblique"])
def test_round_trip_at_native_spacing_is_voxel_exact(tiny_phantom, tmp_path, which):
    dataset = load_dataset(tiny_phantom)
    case = _case(dataset, which)
    original = nib.load(case.label)
    spacing = ras_spacing(original.affine)
    plan = _plan(dataset, tmp_path, spacing)
    record = preprocess_case(case, plan)
    geometry = CaseGeometryRecord.from_json(record["geometry"])
    label = np.load(tmp_path / "pre" / "cases" / case.case_id / "label.npy")
    restored = restore_label_map(label, geometry, 4)
    truth = np.asanyarray(original.dataobj)
    assert restored.shape == truth.shape
    np.testing.assert_array_equal(geometry.original_affine, original.affine)
    for value in (1, 2, 3):
        assert dice(restored == value, truth == value) >= 0.99
    np.testing.assert_array_equal(restored, truth)


@pytest.fixture(scope="module")
def full_resolution_phantom(tmp_path_factory):
    """Two default-resolution phantoms (256x256, ~1.3 x 1.3 x 4 mm): one LPS and one oblique."""
    root = tmp_path_factory.mktemp("full") / "ds"
    generate_phantom_dataset(SynthSettings(out_dir=root, n_labeled=4, n_test=0, n_unlabeled=0))
    return load_dataset(root)


@pytest.mark.parametrize("which", [IS_LPS, IS_OBLIQUE], ids=["LPS", "oblique"])
def test_round_trip_through_default_cpu_spacing(full_resolution_phantom, tmp_path, which):
    """Through a 2.8 x 2.8 x 3 mm grid (twice as coarse in-plane as the scans) only the resolution limit is lost: Dice >= 0.97
    per organ."""
    dataset = full_resolution_phantom
    case = _case(dataset, which)
    original = nib.load(case.label)
    plan = _plan(dataset, tmp_path, (2.8, 2.8, 3.0))
    record = CaseGeometryRecord.from_json(preprocess_case(case, plan)["geometry"])
    label = np.load(tmp_path / "pre" / "cases" / case.case_id / "label.npy")
    assert label.shape == record.preprocessed_shape
    restored = restore_label_map(label, record, 4)
    truth = np.asanyarray(original.dataobj)
    assert restored.shape == truth.shape
    np.testing.assert_array_equal(record.original_affine, original.affine)
    for value in (1, 2, 3):
        assert dice(restored == value, truth == value) >= 0.97, value


def test_preprocessed_affine_places_organs_where_they_were(tiny_phantom, tmp_path):
    """The centroid of each organ in world coordinates agrees between original and preprocessed grids."""
    dataset = load_dataset(tiny_phantom)
    case = _case(dataset, IS_OBLIQUE)
    original = nib.load(case.label)
    record = CaseGeometryRecord.from_json(preprocess_case(case, _plan(dataset, tmp_path, (4.0, 4.0, 4.0)))["geometry"])
    label = np.load(tmp_path / "pre" / "cases" / case.case_id / "label.npy")
    truth = np.asanyarray(original.dataobj)
    for value in (1, 2, 3):
        world_orig = nib.affines.apply_affine(original.affine, np.argwhere(truth == value)).mean(axis=0)
        world_pre = nib.affines.apply_affine(record.preprocessed_affine, np.argwhere(label == value)).mean(axis=0)
        assert np.linalg.norm(world_orig - world_pre) < 3.0
    np.testing.assert_allclose(np.linalg.norm(record.preprocessed_affine[:3, :3], axis=0), [4.0, 4.0, 4.0])


AXCODES = ["".join(p) for p in itertools.product("RL", "AP", "SI")] + ["SRA", "PIL", "ASR"]


@pytest.mark.parametrize("codes", AXCODES)
def test_reorientation_is_exactly_invertible_for_flips_and_permutations(codes):
    ornt = nib.orientations.axcodes2ornt(tuple(codes))
    affine = nib.orientations.inv_ornt_aff(ornt, (5, 6, 7)) @ np.diag([1.0, 2.0, 3.0, 1.0])
    array = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    ras, ras_affine, transform = reorient_to_ras(array, affine)
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    # back through the path inference takes (a crop covering the whole scan)
    unit = (1.0, 1.0, 1.0)
    whole = CaseGeometryRecord(affine, array.shape, transform, (0, 0, 0), ras.shape, unit, unit, ras.shape, ras_affine)
    np.testing.assert_array_equal(place_on_original_grid(ras, whole), array)
    np.testing.assert_allclose(ras_spacing(affine), np.linalg.norm(ras_affine[:3, :3], axis=0))
    # the same voxel value sits at the same world point before and after
    for index in [(0, 0, 0), (4, 5, 6), (2, 3, 1)]:
        world = nib.affines.apply_affine(affine, index)
        ras_index = np.rint(nib.affines.apply_affine(np.linalg.inv(ras_affine), world)).astype(int)
        assert ras[tuple(ras_index)] == array[index]


def test_resample_identity_and_constant_preservation():
    volume = np.random.default_rng(0).normal(size=(2, 9, 8, 7)).astype(np.float32)
    same = resample_volume(volume, (1.0, 2.0, 3.0), (1.0, 2.0, 3.0), (9, 8, 7), "linear")
    np.testing.assert_allclose(same, volume, atol=1e-5)
    constant = np.full((10, 10, 10), 7.0, dtype=np.float32)
    coarse = resample_volume(constant, (1.0, 1.0, 1.0), (2.5, 2.5, 2.5), (4, 4, 4), "linear")
    assert coarse.shape == (4, 4, 4)
    np.testing.assert_allclose(coarse, 7.0)


def test_restore_argmax_equals_the_argmax_of_the_restored_probabilities():
    from scipy import ndimage

    from pipeline.preprocess.geometry import restore_argmax, restore_probabilities
    from pipeline.preprocess.run import transform_case
    from tests.inference.oracle import oblique_lps_affine, oracle_plan, oracle_scan

    image, _ = oracle_scan(shape=(60, 50, 24))
    affine = oblique_lps_affine(spacing=(0.9, 0.8, 2.5))
    record, prepared, _ = transform_case(image[None], affine, None, oracle_plan(affine, (2.1, 1.7, 3.1)))
    logits = ndimage.gaussian_filter(np.random.default_rng(0).normal(size=(4, *prepared.shape[1:])), sigma=(0, 1.5, 1.5, 1.5))
    probabilities = np.exp(5 * logits)
    probabilities = (probabilities / probabilities.sum(axis=0)).astype(np.float32)
    fast = restore_argmax(probabilities, record)
    reference = restore_probabilities(probabilities, record).argmax(axis=0)
    assert fast.shape == record.original_shape and fast.dtype == np.uint8
    assert np.array_equal(fast, reference)
    assert len(np.unique(fast)) == 4  # every class occurs, so boundaries were really interpolated


def test_fine_voxels_of_mixed_cells_are_those_whose_2x2x2_coarse_neighbours_disagree():
    from pipeline.preprocess.geometry import _fine_voxels_of_cells, _mixed_cells, linear_taps

    rng = np.random.default_rng(1)
    coarse = (rng.random((7, 5, 1)) < 0.3).astype(np.uint8)  # a single-slice axis: one cell along it
    taps = [linear_taps(n, 2.3, 0.9, m) for n, m in zip(coarse.shape, (17, 12, 3))]
    lows, highs = [t[0] for t in taps], [t[1] for t in taps]
    corners = [coarse[np.ix_(*(high if side else low for side, low, high in zip(sides, lows, highs)))]
               for sides in itertools.product((0, 1), repeat=3)]  # fmt: skip
    expected = np.max(corners, axis=0) != np.min(corners, axis=0)  # brute force, voxel by voxel
    points = _fine_voxels_of_cells(np.argwhere(_mixed_cells(coarse)), lows)
    found = np.zeros((17, 12, 3), dtype=bool)
    found[points] = True
    assert expected.any() and not expected.all()
    assert np.array_equal(found, expected) and len(points[0]) == expected.sum()  # each voxel once


def test_restored_label_maps_are_fortran_ordered_and_lie_on_the_scan():
    from pipeline.preprocess.geometry import restore_argmax
    from pipeline.preprocess.run import transform_case
    from tests.inference.oracle import oblique_lps_affine, oracle_plan, oracle_scan

    image, truth = oracle_scan(shape=(40, 36, 20))
    affine = oblique_lps_affine(spacing=(0.9, 0.8, 2.5))
    record, _, prepared_truth = transform_case(image[None], affine, truth, oracle_plan(affine, (1.8, 1.6, 2.5)))
    one_hot = np.stack([prepared_truth == value for value in range(3)]).astype(np.float32)
    label = restore_argmax(one_hot, record)
    assert label.flags.f_contiguous and label.shape == truth.shape
    for value in (1, 2):  # each organ back on its own voxels, in the scan's own (LPS, oblique) axes
        assert dice(label == value, truth == value) > 0.9


def test_class_by_class_label_resampling_equals_the_one_hot_argmax():
    from pipeline.preprocess.geometry import resample_labels, resample_volume

    rng = np.random.default_rng(0)
    label = rng.choice([0, 1, 3], size=(23, 19, 7), p=[0.6, 0.3, 0.1]).astype(np.uint8)  # class 2 absent: never wins
    label[5:12, 5:12, 2:5] = 3
    for target in ((1.7, 2.3, 4.0), (0.6, 0.7, 1.3)):
        shape = tuple(int(round(n * s / t)) for n, s, t in zip(label.shape, (1.0, 1.2, 3.0), target))
        one_hot = np.stack([(label == c).astype(np.float32) for c in range(4)])
        expected = resample_volume(one_hot, (1.0, 1.2, 3.0), target, shape, "linear").argmax(0)
        assert np.array_equal(resample_labels(label, (1.0, 1.2, 3.0), target, shape, 4), expected)


def _map_coordinates_reference(volume: np.ndarray, source, target, shape) -> np.ndarray:
    """Corner-aligned linear resampling with nearest extrapolation, written independently with SciPy (float64)."""
    from scipy import ndimage

    axes = [np.clip((np.arange(n) + 0.5) * t / s - 0.5, 0, m - 1) for n, s, t, m in zip(shape, source, target, volume.shape)]
    points = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")])
    return ndimage.map_coordinates(volume.astype(np.float64), points, order=1, mode="nearest").reshape(shape)


SPACINGS = [  # (source, target): oblique ratios down and up, one axis unchanged, and an odd number of slices halved
    ((1.0, 1.2, 3.0), (1.7, 2.3, 4.0)),
    ((1.0, 1.2, 3.0), (0.6, 0.7, 1.3)),
    ((0.7, 0.7, 2.5), (0.7, 1.9, 1.1)),
    ((1.0, 1.0, 1.0), (2.0, 2.0, 2.0)),
]


@pytest.mark.parametrize(("source", "target"), SPACINGS)
def test_linear_resampling_matches_scipy_and_simpleitk_on_fortran_ordered_and_flipped_volumes(source, target):
    from pipeline.preprocess.geometry import resample_linear

    rng = np.random.default_rng(3)
    volume = np.asfortranarray(rng.normal(size=(23, 19, 9)).astype(np.float32) * 300)
    for view in (volume, volume[::-1, 2:, :], np.ascontiguousarray(volume)):
        shape = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(view.shape, source, target))
        ours = resample_linear(view, source, target, shape)
        assert ours.dtype == np.float32 and ours.shape == shape
        np.testing.assert_allclose(ours, _map_coordinates_reference(view, source, target, shape), rtol=0, atol=1e-3)
        itk = resample_volume(view, source, target, shape, "linear")
        inside = np.ones(shape, dtype=bool)  # ITK switches to nearest neighbour where a centre lies on the far edge
        for axis, (n, s, t, m) in enumerate(zip(shape, source, target, view.shape)):
            edge = np.isclose((np.arange(n) + 0.5) * t / s - 0.5, m - 0.5)
            inside &= ~edge.reshape([-1 if a == axis else 1 for a in range(3)])
        assert inside.mean() > 0.8
        same = ours[inside] == itk[inside]
        assert same.mean() > 0.99  # bit for bit, but at exact halves a midpoint may round to the other float32
        np.testing.assert_allclose(ours[inside], itk[inside], rtol=2e-7, atol=0)


def test_a_pointwise_map_on_the_gathered_neighbours_equals_mapping_the_whole_volume_first():
    from pipeline.preprocess.geometry import resample_linear

    volume = np.asfortranarray(np.random.default_rng(4).integers(-1024, 1500, size=(31, 27, 11)).astype(np.int16))
    window = lambda v: (np.clip(v.astype(np.float32), -160, 240) + np.float32(160)) / np.float32(400)  # noqa: E731
    args = ((0.8, 0.8, 2.0), (1.9, 2.1, 3.3), (13, 10, 7))
    assert np.array_equal(resample_linear(volume, *args, pointwise=window), resample_linear(window(volume), *args))


@pytest.mark.parametrize(("source", "target"), SPACINGS)
def test_label_resampling_equals_the_argmax_of_independently_resampled_one_hot_channels(source, target):
    from pipeline.preprocess.geometry import resample_labels

    rng = np.random.default_rng(5)
    smooth = ndimage_gaussian(rng.normal(size=(4, 23, 19, 9)))
    label = np.asfortranarray(np.where(smooth.argmax(0) == 2, 3, smooth.argmax(0)).astype(np.uint8))  # ids 0, 1, 3
    for view in (label, label[::-1, 2:, :]):
        shape = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(view.shape, source, target))
        scores = np.stack([_map_coordinates_reference((view == c).astype(np.float32), source, target, shape) for c in range(4)])
        expected = scores.astype(np.float32).argmax(0)  # ties (exact halves) go to the lower id, as argmax does
        ours = resample_labels(view, source, target, shape, 4)
        assert ours.dtype == np.uint8 and np.array_equal(ours, expected)
        assert set(np.unique(ours)) == {0, 1, 3}


def ndimage_gaussian(noise: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(noise, sigma=(0, 2, 2, 1))
