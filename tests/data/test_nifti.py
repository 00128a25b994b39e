"""NIfTI reading by content (F1-F3) and writing with clean headers."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from pipeline.data.nifti import Geometry, read_nifti, write_nifti
from pipeline.errors import InvalidInputError
from tests.conftest import make_volume, save


def test_reads_gzip_content_named_nii_and_plain_content_named_gz(tmp_path):
    volume = make_volume()
    plain = save(tmp_path / "plain.nii", volume)
    gz = save(tmp_path / "real.nii.gz", volume)
    misnamed_gz = tmp_path / "looks_plain.nii"
    misnamed_gz.write_bytes(gz.read_bytes())
    misnamed_plain = tmp_path / "looks_gz.nii.gz"
    misnamed_plain.write_bytes(plain.read_bytes())
    a, b = read_nifti(misnamed_gz), read_nifti(misnamed_plain)
    np.testing.assert_array_equal(a.data, volume)
    np.testing.assert_array_equal(b.data, volume)
    assert a.compressed and "gzip-compressed" in a.suffix_mismatch()
    assert not b.compressed and "plain" in b.suffix_mismatch()
    assert read_nifti(gz).suffix_mismatch() is None


@pytest.mark.parametrize("compressed", [True, False])
def test_truncated_file_is_reported_with_its_path(tmp_path, compressed):
    path = save(tmp_path / ("cut.nii.gz" if compressed else "cut.nii"), make_volume((40, 40, 20)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InvalidInputError) as err:
        read_nifti(path, case="c1")
    assert err.value.code == "F1"
    assert str(path) in str(err.value) and "(case c1)" in str(err.value)
    assert "truncated" in str(err.value)


def test_corrupt_deflate_data_is_an_f1_error_and_isal_reads_what_zlib_reads(tmp_path):
    from pipeline.data import nifti

    volume = make_volume((40, 40, 20))
    path = save(tmp_path / "scan.nii.gz", volume)
    raw = path.read_bytes()
    assert nifti.gzip_reader.__name__ == "isal.igzip"  # the fast inflate is in use (isal is a dependency)
    np.testing.assert_array_equal(read_nifti(path).data, np.asanyarray(nib.load(path).dataobj))  # nibabel: zlib
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(raw[:200] + bytes(b ^ 0xFF for b in raw[200:400]) + raw[400:])
    with pytest.raises(InvalidInputError) as err:
        read_nifti(corrupt, case="c2")
    assert err.value.code == "F1" and str(corrupt) in str(err.value) and "corrupt gzip stream" in str(err.value)


@pytest.mark.parametrize(
    "content, expected",
    [(b"", "empty file"), (b"\x00" * 400, "not a NIfTI file"), (gzip.compress(b"hello world" * 50), "not a NIfTI file")],
)
def test_non_nifti_content_rejected(tmp_path, content, expected):
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError) as err:
        read_nifti(path)
    assert err.value.code == "F2" and expected in err.value.reason and str(path) in str(err.value)


def test_directory_is_rejected(tmp_path):
    folder = tmp_path / "scan.nii.gz"
    folder.mkdir()
    with pytest.raises(InvalidInputError, match="is a directory"):
        read_nifti(folder)


def test_write_nifti_keeps_geometry_and_clears_free_text(tmp_path):
    affine = np.array([[-0.8, 0, 0, 120.0], [0, -0.8, 0, 90.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])
    out = tmp_path / "mask.nii.gz"
    write_nifti(out, np.ones((5, 6, 7)), affine, dtype=np.uint8)
    image = nib.load(out)
    np.testing.assert_allclose(image.affine, affine, atol=1e-6)
    assert image.get_data_dtype() == np.uint8
    assert image.header["descrip"].item() == b""
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_geometry_properties_and_json_round_trip():
    affine = np.array([[0, 0, 3.0, 1.0], [-2.0, 0, 0, 2.0], [0, 1.5, 0, 3.0], [0, 0, 0, 1]])
    geometry = Geometry(affine, (4, 5, 6))
    np.testing.assert_allclose(geometry.spacing, [2.0, 1.5, 3.0])
    np.testing.assert_allclose(geometry.origin, [1.0, 2.0, 3.0])
    assert geometry.orthonormality_error() == pytest.approx(0.0)
    again = Geometry.from_json(geometry.to_json())
    np.testing.assert_array_equal(again.affine, affine)
    assert again.shape == (4, 5, 6)
    sheared = affine.copy()
    sheared[0, 1] = 0.5
    assert Geometry(sheared, (4, 5, 6)).orthonormality_error() > 0.1


def test_label_ids_above_255_keep_their_value_through_read_preprocess_restore_and_write(tmp_path):
    from dataclasses import replace

    from pipeline.data.labels import label_dtype
    from pipeline.data.nifti import label_array
    from pipeline.preprocess.geometry import restore_label_map
    from pipeline.preprocess.run import transform_case
    from tests.inference.oracle import oblique_lps_affine, oracle_plan

    assert (label_dtype(256), label_dtype(257), label_dtype(65536)) == (np.uint8, np.uint16, np.uint16)
    with pytest.raises(ValueError, match="label id 65536 exceeds 65535"):
        label_dtype(65537)
    affine = oblique_lps_affine()
    label = np.zeros((16, 14, 8), np.int32)
    label[3:7, 3:7, 2:5], label[8:12, 6:10, 3:6] = 1, 300
    path = save(tmp_path / "label.nii.gz", label, affine)
    read = label_array(read_nifti(path), {0, 1, 300})
    assert read.dtype == np.uint16 and np.array_equal(read, label)
    image = np.where(label > 0, 100.0, 0.0).astype(np.float32)[None]
    plan = replace(oracle_plan(affine), declared_labels=frozenset({0, 1, 300}), num_classes=301)
    record, _, prepared = transform_case(image, affine, read, plan)
    assert prepared.dtype == np.uint16 and set(np.unique(prepared)) == {0, 1, 300}
    restored = restore_label_map(prepared, record, 301)
    assert restored.dtype == np.uint16 and np.array_equal(restored, label)
    write_nifti(tmp_path / "out.nii.gz", restored, affine, label_dtype(301))
    assert np.array_equal(np.asarray(nib.load(tmp_path / "out.nii.gz").dataobj), label)
