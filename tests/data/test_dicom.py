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


def _sitk_series(folder):
    """Read a series with SimpleITK's ImageSeriesReader: an independent oracle (GDCM's sorting, ITK's geometry)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # ITK (z, y, x) -> our (x, y, z)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _write_with_sitk(volume, folder, spacing=(0.7, 0.8, 2.0), origin=(-120.0, -90.0, 35.0)):
    """Write a CT series with SimpleITK/GDCM (not our writer), file names in reverse slice order."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid, study_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    n = volume.shape[2]
    for k in range(n):
        piece = sitk.GetImageFromArray(volume[:, :, k].T[None])  # (1, y, x)
        piece.SetSpacing(spacing)
        piece.SetOrigin((origin[0], origin[1], origin[2] + k * spacing[2]))
        for tag, value in {"0008|0060": "CT", "0020|000e": series_uid, "0020|000d": study_uid,
                           "0008|0018": pydicom.uid.generate_uid(), "0020|0013": str(k + 1),
                           "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0032": "\\".join(f"{v:.4f}" for v in piece.GetOrigin()),
                           "0028|0030": f"{spacing[1]}\\{spacing[0]}"}.items():  # fmt: skip
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"img{n - k:03d}.dcm"))
        writer.Execute(piece)


@pytest.mark.parametrize("writer", ["segpipe", "simpleitk"])
def test_reader_agrees_with_simpleitk_image_series_reader(tmp_path, writer):
    volume = _volume((14, 11, 7), seed=3)
    if writer == "segpipe":
        write_ct_series(volume, oblique_lps_affine(spacing=(0.8, 0.7, 2.5)), tmp_path)
    else:
        _write_with_sitk(volume, tmp_path)
    expected_array, expected_affine = _sitk_series(tmp_path)
    series = read_dicom_series(tmp_path)
    assert np.array_equal(series.array, expected_array)
    assert np.allclose(series.affine, expected_affine, atol=1e-4)
    assert np.array_equal(series.array, volume)


def test_a_slice_without_pixel_spacing_is_named_not_an_attribute_error(tmp_path):
    paths = write_ct_series(_volume(), oblique_lps_affine(), tmp_path)
    ds = pydicom.dcmread(paths[3])
    del ds.PixelSpacing
    ds.save_as(paths[3])
    with pytest.raises(InvalidInputError) as error:
        read_dicom_series(tmp_path)
    assert str(error.value) == f"{paths[3]}: [D3] missing DICOM geometry tag(s) ['PixelSpacing']: the slice cannot be placed"


def test_zero_pixel_spacing_and_gantry_tilt_are_refused(tmp_path):
    paths = write_ct_series(_volume(), oblique_lps_affine(), tmp_path / "zero")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [0.0, 0.7]
        ds.save_as(path)
    with pytest.raises(InvalidInputError, match=r"\[G11\] PixelSpacing \[0.0, 0.7\] must be finite and > 0"):
        read_dicom_series(tmp_path / "zero")
    paths = write_ct_series(_volume(), np.diag([0.8, 0.8, 2.5, 1.0]), tmp_path / "tilt")
    for k, path in enumerate(paths):  # shift each slice along y: a 20-degree gantry tilt
        ds = pydicom.dcmread(path)
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1] + k * 2.5 * np.tan(np.radians(20)), position[2]]
        ds.save_as(path)
    with pytest.raises(InvalidInputError, match=r"\[G4\] slices are stacked off their normal \(gantry tilt"):
        read_dicom_series(tmp_path / "tilt")
