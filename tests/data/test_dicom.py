"""DICOM series input: exact round trip of voxels and geometry, slice sorting, rows D1 and D2."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from pipeline.data.dicom import choose_series_uid, is_dicom_folder, read_dicom_series, write_ct_series
from pipeline.errors import InvalidInputError
from tests.inference.oracle import oblique_lps_affine


def _volume(shape=(12, 10, 6), seed=0):
    return np.random.default_rng(seed).integers(-1000, 1500, shape).astype(np.int16)


def test_oblique_series_round_trips_voxels_and_affine(tmp_path):
    volume, affine = _volume(), oblique_lps_affine(spacing=(0.8, 0.7, 2.5))
    write_ct_series(volume, affine, tmp_path)
    series = read_dicom_series(tmp_path)
    assert is_dicom_folder(tmp_path) and series.modality == "CT"
    assert np.array_equal(series.array, volume)
    assert np.allclose(series.affine, affine, atol=1e-5)
    assert [p.name for p in series.files] == [f"slice_{k:04d}.dcm" for k in range(6)]


def test_slices_are_sorted_by_position_not_by_file_name(tmp_path):
    volume, affine = _volume(), oblique_lps_affine()
    paths = write_ct_series(volume, affine, tmp_path)
    for k, path in enumerate(paths):  # file names now run against the slice order
        path.rename(tmp_path / f"img_{len(paths) - k:03d}.dcm")
    series = read_dicom_series(tmp_path)
    assert np.array_equal(series.array, volume)
    assert series.files[0].name == f"img_{len(paths):03d}.dcm"


def test_two_series_in_one_folder_are_listed_unless_one_is_chosen(tmp_path):
    write_ct_series(_volume(seed=1), oblique_lps_affine(), tmp_path / "a")
    write_ct_series(_volume(seed=2), oblique_lps_affine(), tmp_path / "b", series_description="second")
    for path in (tmp_path / "b").iterdir():
        path.rename(tmp_path / "a" / f"b_{path.name}")
    uids = {str(pydicom.dcmread(p).SeriesInstanceUID) for p in (tmp_path / "a").iterdir()}
    with pytest.raises(InvalidInputError) as both:
        read_dicom_series(tmp_path / "a")
    assert "[D1]" in str(both.value) and all(uid in str(both.value) for uid in uids) and "'second'" in str(both.value)
    chosen = next(iter(uids))
    assert read_dicom_series(tmp_path / "a", chosen).series_uid == chosen == choose_series_uid(tmp_path / "a", chosen)


def test_a_missing_slice_is_an_error_naming_the_gap(tmp_path):
    paths = write_ct_series(_volume(), oblique_lps_affine(spacing=(0.8, 0.7, 2.5)), tmp_path)
    paths[3].unlink()
    with pytest.raises(InvalidInputError) as gap:
        read_dicom_series(tmp_path)
    message = str(gap.value)
    assert "[D2]" in message and "gap 5.000 mm" in message and "largest deviation 2.500 mm" in message
    assert "slice_0002.dcm" in message and "slice_0004.dcm" in message


def test_a_duplicated_slice_and_a_folder_without_dicom_are_errors(tmp_path):
    paths = write_ct_series(_volume(), oblique_lps_affine(), tmp_path / "dup")
    (tmp_path / "dup" / "copy.dcm").write_bytes(paths[2].read_bytes())
    with pytest.raises(InvalidInputError, match=r"\[D2\] duplicate slice position"):
        read_dicom_series(tmp_path / "dup")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not dicom")
    assert not is_dicom_folder(tmp_path / "empty")
    with pytest.raises(InvalidInputError, match=r"\[F1\] no DICOM image"):
        read_dicom_series(tmp_path / "empty")
