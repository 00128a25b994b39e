"""Every reliability row that ``segpipe verify`` implements: its fixture gives its message, with the file name."""

from __future__ import annotations

import gzip
import io
import json
import os

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import CheckSettings, VerifySettings
from pipeline.data.verify import verify_dataset
from tests.conftest import make_label, make_volume, save, write_msd

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def patch_header(path, **fields):
    """Rewrite header fields of a saved .nii.gz in place, bypassing nibabel's consistency fixes (pixdim, scaling)."""
    raw = gzip.decompress(path.read_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]), check=False)
    for name, value in fields.items():
        if name.startswith("pixdim"):
            header["pixdim"][int(name[-1])] = value
        else:
            header[name] = value
    path.write_bytes(gzip.compress(header.binaryblock + raw[348:]))


def save_with_forms(path, data, qform, sform, qcode=1, scode=1):
    """Save with an explicit qform and sform (nibabel would otherwise keep them in step)."""
    image = nib.Nifti1Image(data, sform)
    image.set_qform(qform, code=qcode)
    image.set_sform(sform, code=scode)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)


def _build(root, row):
    """Write a dataset with one good case and one case broken as ``row`` describes; return the bad file."""
    image, label, label_affine = make_volume((40, 40, 20)), make_label((40, 40, 20)), AFFINE
    if row == "G1":
        label = make_label((40, 40, 21))
    elif row == "G2":
        label_affine = np.diag([1.5, 1.5 * 0.82 / 0.80, 3.0, 1.0])
    elif row == "G3-origin":
        label_affine = AFFINE.copy()
        label_affine[:3, 3] = [2.0, 0, 0]
    elif row == "G3-direction":
        label_affine = np.diag([-1.5, 1.5, 3.0, 1.0])
    elif row == "V1":
        image = image.astype(np.float32)
        image[0, 0, :3] = [np.nan, np.inf, -np.inf]
    elif row == "V2":
        label = label.astype(np.float32)
    elif row == "V3":
        label = label.astype(np.float32)
        label[label == 1] = 0.9999999
    elif row == "V4":
        label = label.astype(np.int16)
        label[0, 0, 0], label[1, 1, 1] = 255, -1
    elif row == "V6":
        label = np.zeros_like(label)
    elif row == "V7":
        image = np.full((40, 40, 20), 30, dtype=np.int16)
    elif row == "G8-4d":
        image = np.stack([image, image], axis=-1)
    elif row == "G8-2d":
        image, label = image[:, :, :1], label[:, :, :1]
    elif row == "G8-singleton":
        image = image[..., None]
    write_msd(root, {"good": (make_volume((40, 40, 20)), make_label((40, 40, 20))), "bad": (image, None)}, AFFINE)
    save(root / "labelsTr" / "bad.nii.gz", label, label_affine)
    image_path, label_path = root / "imagesTr" / "bad.nii.gz", root / "labelsTr" / "bad.nii.gz"
    if row == "G4":
        sheared = AFFINE.copy()
        sheared[0, 1] = 0.3
        save(image_path, image, sheared)
    if row == "G9":
        shifted = AFFINE.copy()
        shifted[0, 3] += 10.0  # a mask 10 mm off in ITK-based viewers
        save_with_forms(image_path, image, shifted, AFFINE)
    elif row in ("G11-zero", "G11-nan"):
        patch_header(image_path, pixdim2=0.0 if row == "G11-zero" else np.nan)
    elif row == "V8":
        patch_header(label_path, scl_slope=2.0, scl_inter=0.0)
    elif row == "F7-bomb":
        raw = gzip.decompress(image_path.read_bytes())
        image_path.write_bytes(gzip.compress(raw + bytes(40 << 20), compresslevel=1))
    elif row == "F7-huge":
        patch_header(image_path, dim=[3, 5000, 5000, 5000, 1, 1, 1, 1])
    elif row == "F8":
        rgb = np.zeros((40, 40, 20), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        nib.save(nib.Nifti1Image(rgb, AFFINE), image_path)
    elif row == "F2-loop":
        image_path.unlink()
        other = image_path.with_name("loop.nii.gz")
        image_path.symlink_to(other)
        other.symlink_to(image_path)
    if row == "F1":
        _truncate(image_path)
    elif row == "F2-empty":
        image_path.write_bytes(b"")
    elif row == "F2-random":
        image_path.write_bytes(os.urandom(5000))
    elif row == "F3":
        gz = label_path.read_bytes()
        label_path.unlink()
        save(root / "labelsTr" / "plain.nii", label, label_affine)
        label_path.write_bytes((root / "labelsTr" / "plain.nii").read_bytes())
        (root / "labelsTr" / "plain.nii").unlink()
        assert gz[:2] == b"\x1f\x8b"
    on_image = {"F1", "F2-empty", "F2-random", "F2-loop", "F7-bomb", "F7-huge", "F8", "V1", "V7", "G4", "G9", "G11-zero",
                "G11-nan", "G8-4d", "G8-2d", "G8-singleton"}  # fmt: skip
    return image_path if row in on_image else label_path


ROWS = {
    # row: (code, severity, words in the message)
    "F1": ("F1", "error", "truncated"),
    "F2-empty": ("F2", "error", "empty file"),
    "F2-random": ("F2", "error", "not a NIfTI file"),
    "F3": ("F3", "warning", "plain (uncompressed) NIfTI but the name ends in .gz"),
    "G1": ("G1", "error", "(40, 40, 21) differs from image"),
    "G2": ("G2", "error", "[1.5, 1.5375, 3.0] mm differs"),
    "G3-origin": ("G3", "error", "origin [2.0, 0.0, 0.0] differs"),
    "G3-direction": ("G3", "error", "direction"),
    "G4": ("G4", "error", "not orthonormal"),
    "G9": ("G9", "error", "qform and sform disagree by up to 10 mm"),
    "G11-zero": ("G11", "error", "[1.5, 0.0, 3.0] must be finite and > 0"),
    "G11-nan": ("G11", "error", "must be finite and > 0"),
    "V8": ("V8", "error", "label map carries intensity scaling (scl_slope=2.0"),
    "F2-loop": ("F2", "error", "symbolic link that does not resolve"),
    "F7-bomb": ("F7", "warning", "past the declared voxel data"),
    "F7-huge": ("F7", "error", "(5000, 5000, 5000)"),
    "F8": ("F8", "error", "not a scalar image"),
    "G8-4d": ("G8", "error", "4D data with shape (40, 40, 20, 2)"),
    "G8-2d": ("G8", "error", "2D data with shape (40, 40, 1)"),
    "G8-singleton": ("G8", "warning", "squeezed to 3D"),
    "V1": ("V1", "error", "3 NaN/Inf voxels"),
    "V2": ("V2", "warning", "exact integer values"),
    "V3": ("V3", "error", "non-integer label values"),
    "V4": ("V4", "error", "[-1, 255] are not declared"),
    "V6": ("V6", "warning", "all background"),
    "V7": ("V7", "warning", "constant image (every voxel = 30)"),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_reliability_row_reported_with_file_name(tmp_path, row):
    root = tmp_path / "ds"
    bad_file = _build(root, row)
    code, severity, words = ROWS[row]
    report = verify_dataset(root, VerifySettings())
    matching = [p for p in report.problems if p.code == code]
    assert matching, f"no {code} problem in {[p.line() for p in report.problems]}"
    problem = matching[0]
    assert problem.severity == severity
    assert problem.path == str(bad_file)
    assert problem.line().startswith(str(bad_file))
    assert words in problem.message
    assert problem.case == "bad"
    assert all(p.case != "good" for p in report.problems)
    assert bool(report.errors) == (severity == "error")


def test_all_problems_of_all_cases_reported_in_one_run_and_exit_code(tmp_path):
    root = tmp_path / "ds"
    cases = {
        "nan": (make_volume().astype(np.float32), make_label()),
        "shape": (make_volume(), make_label((12, 10, 9))),
        "undeclared": (make_volume(), make_label() * 3),
        "good": (make_volume(), make_label()),
    }
    cases["nan"][0][0, 0, 0] = np.nan
    write_msd(root, cases)
    (root / "imagesTr" / "orphan.nii.gz").write_bytes(b"")
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["verify", str(root), f"verify.report={report_path}"])
    assert result.exit_code == 1
    report = json.loads(report_path.read_text())
    codes = sorted(p["code"] for p in report["problems"] if p["severity"] == "error")
    assert codes == ["F6", "G1", "V1", "V4"]
    for name in ("imagesTr/nan.nii.gz", "labelsTr/shape.nii.gz", "labelsTr/undeclared.nii.gz", "imagesTr/orphan.nii.gz"):
        assert str(root / name) in result.output


def test_clean_phantom_passes_and_warnings_alone_exit_zero(tiny_phantom, tmp_path):
    report_path = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["verify", str(tiny_phantom), f"verify.report={report_path}"])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["num_errors"] == 0 and report["num_warnings"] == 0 and report["num_cases"] == 7

    root = write_msd(tmp_path / "warn", {"empty_mask": (make_volume(), np.zeros((12, 10, 8), np.uint8))})
    result = CliRunner().invoke(app, ["verify", str(root), f"verify.report={tmp_path / 'w.json'}"])
    assert result.exit_code == 0 and "[V6]" in result.output


def test_spacing_tolerance_is_configurable(tmp_path):
    root = tmp_path / "ds"
    _build(root, "G2")
    assert any(p.code == "G2" for p in verify_dataset(root, VerifySettings()).problems)
    assert not any(
        p.code == "G2" for p in verify_dataset(root, VerifySettings(), checks=CheckSettings(spacing_tolerance_mm=0.05)).problems
    )


def test_a_multimodal_msd_dataset_verifies_and_a_wrong_channel_count_is_named(tmp_path):
    from tests.conftest import write_multimodal_msd

    good = np.stack([make_volume(), make_volume(value=90)], axis=-1)
    root = write_multimodal_msd(tmp_path / "Task05", {"ok": (good, make_label()), "three": (np.stack([good[..., 0]] * 3, -1),
                                                                                              make_label())})  # fmt: skip
    report = verify_dataset(root, VerifySettings(report=tmp_path / "r.json"))
    assert [(p.case, p.code, p.severity) for p in report.problems] == [("three", "G8", "error")]
    assert report.problems[0].path.endswith("three.nii.gz") and "(x, y, z, 2)" in report.problems[0].message
