"""Header checks shared by every reader (rows G4, G9-G11, V8, F7, F8): one function, the same verdict on every path."""

from __future__ import annotations

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.config import CheckSettings
from pipeline.data.header import header_findings, read_checked, require_valid_header
from pipeline.data.layout import Case
from pipeline.data.nifti import read_nifti, write_nifti
from pipeline.errors import InvalidInputError
from pipeline.preprocess.reading import read_case
from tests.conftest import make_volume
from tests.data.test_verify import patch_header, save_with_forms

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


def _shifted(mm: float) -> np.ndarray:
    affine = AFFINE.copy()
    affine[0, 3] += mm
    return affine


def test_our_writer_sets_agreeing_qform_and_sform_that_itk_reads_like_nibabel(tmp_path):
    rotation = np.array([[0.0, -1.0, 0.0], [0.8, 0.0, 0.6], [-0.6, 0.0, 0.8]])  # a rigid, oblique grid
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.9, 2.5])
    affine[:3, 3] = [-12.5, 30.0, 4.0]
    path = tmp_path / "mask.nii.gz"
    write_nifti(path, np.zeros((5, 6, 7), np.uint8), affine)
    header = nib.load(path).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 1)
    assert np.allclose(header.get_qform(), header.get_sform(), atol=1e-5)
    image = sitk.ReadImage(str(path))  # ITK: LPS, so x and y change sign
    lps = np.diag([-1.0, -1.0, 1.0])
    assert np.allclose(lps @ np.asarray(image.GetOrigin()), affine[:3, 3], atol=1e-4)
    direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    assert np.allclose(lps @ direction, affine[:3, :3], atol=1e-4)
    assert [f.message for f in header_findings(read_nifti(path))] == ["qform and sform agree"]


def test_qform_and_sform_10_mm_apart_is_an_error_naming_both_matrices(tmp_path):
    path = tmp_path / "scan.nii.gz"
    save_with_forms(path, make_volume(), qform=_shifted(10.0), sform=AFFINE)
    with pytest.raises(InvalidInputError) as error:
        require_valid_header(read_nifti(path), case="c1")
    message = str(error.value)
    assert message.startswith(f"{path} (case c1): [G9] qform and sform disagree by up to 10 mm")
    assert str(np.round(_shifted(10.0), 4).tolist()) in message and str(np.round(AFFINE, 4).tolist()) in message
    save_with_forms(path, make_volume(), qform=_shifted(5e-4), sform=AFFINE)  # within the 1e-3 mm tolerance
    require_valid_header(read_nifti(path))
    with pytest.raises(InvalidInputError, match="G9"):
        require_valid_header(read_nifti(path), CheckSettings(origin_tolerance_mm=1e-4))


@pytest.mark.parametrize(
    ("qcode", "scode", "severity", "words"),
    [(0, 2, "note", "only the sform is set (code 2)"), (1, 0, "note", "only the qform is set (code 1)"),
     (0, 0, "warning", "neither qform nor sform")],
)  # fmt: skip
def test_when_one_form_is_set_the_finding_says_which_is_used(tmp_path, qcode, scode, severity, words):
    path = tmp_path / "scan.nii.gz"
    save_with_forms(path, make_volume(), qform=_shifted(10.0), sform=AFFINE, qcode=qcode, scode=scode)
    findings = [f for f in header_findings(read_nifti(path)) if f.code == "G10"]
    assert [(f.severity, words in f.message) for f in findings] == [(severity, True)]
    require_valid_header(read_nifti(path))  # a note or warning never refuses the file


@pytest.mark.parametrize(
    ("field", "value", "code"), [("pixdim1", 0.0, "G11"), ("pixdim3", -2.0, "G11"), ("pixdim2", np.nan, "G11")]
)
def test_zero_negative_or_nan_spacing_is_refused_although_nibabel_would_fix_it(tmp_path, field, value, code):
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(make_volume(), AFFINE), path)
    patch_header(path, **{field: value})
    with pytest.raises(InvalidInputError, match=rf"\[{code}\] voxel spacing \(pixdim\)"):
        read_checked(path, "c1")


def test_preprocess_infer_and_predict_read_through_the_same_checks_as_verify(tmp_path):
    """read_case is what plan, preprocess, infer, predict and crossval call: shear, G9 and zero spacing fail there."""
    sheared = AFFINE.copy()
    sheared[0, 1] = 0.3
    cases = {}
    for name, build in {
        "shear": lambda p: nib.save(nib.Nifti1Image(make_volume(), sheared), p),
        "forms": lambda p: save_with_forms(p, make_volume(), qform=_shifted(10.0), sform=AFFINE),
        "spacing": lambda p: (nib.save(nib.Nifti1Image(make_volume(), AFFINE), p), patch_header(p, pixdim1=0.0)),
    }.items():
        path = tmp_path / f"{name}.nii.gz"
        build(path)
        cases[name] = Case(name, (path,), None, "test")
    codes = {}
    for name, case in cases.items():
        with pytest.raises(InvalidInputError) as error:
            read_case(case, set())
        codes[name] = error.value.code
        assert str(case.images[0]) in str(error.value) and f"(case {name})" in str(error.value)
    assert codes == {"shear": "G4", "forms": "G9", "spacing": "G11"}


def test_scaling_on_a_label_map_is_named_but_allowed_on_an_image(tmp_path):
    path = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), AFFINE), path)
    patch_header(path, scl_slope=2.0, scl_inter=1.0)
    with pytest.raises(InvalidInputError, match=r"\[V8\] label map carries intensity scaling \(scl_slope=2.0, scl_inter=1.0\)"):
        read_checked(path, "c1", is_label=True)
    assert read_checked(path, "c1").data.max() == 3.0  # an image's scaling is applied: 1 * 2 + 1


def test_oversized_header_is_refused_before_decompression_and_a_bomb_costs_no_more_than_its_header_says(tmp_path):
    volume = np.arange(64 * 64 * 32, dtype=np.int16).reshape(64, 64, 32)
    honest = tmp_path / "honest.nii.gz"
    nib.save(nib.Nifti1Image(volume, AFFINE), honest)
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(gzip.decompress(honest.read_bytes()) + bytes(200 << 20), compresslevel=1))
    assert bomb.stat().st_size < 1 << 20  # 200 MB of zeros compress to well under 1 MB
    tracemalloc.start()
    loaded = read_nifti(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(loaded.data, volume)
    assert loaded.trailing_bytes >= 16 << 20  # counted (at least 16 MiB), never held
    assert peak < 3 * volume.nbytes + (4 << 20), peak  # bytes + array + one 1 MiB chunk, not 200 MB

    with pytest.raises(InvalidInputError, match=r"\[F7\] header declares shape \(64, 64, 32\) of int16 = 0.00 GiB"):
        read_nifti(honest, max_decoded_bytes=1000)


def test_reading_peak_memory_is_bounded_by_twice_the_decoded_volume(tmp_path):
    volume = np.random.default_rng(0).normal(size=(96, 96, 64)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume, AFFINE), path)
    tracemalloc.start()
    loaded = read_nifti(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(loaded.data, volume)
    assert peak <= 2 * volume.nbytes + (2 << 20), peak / volume.nbytes


def test_an_rgb_volume_is_named_not_a_crash(tmp_path):
    path = tmp_path / "photo.nii.gz"
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, AFFINE), path)
    with pytest.raises(InvalidInputError, match=r"\[F8\] voxel type .* is not a scalar image"):
        read_nifti(path)
