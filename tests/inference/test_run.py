"""``infer`` and ``predict``: model folders, geometry of written masks, no identifiers in outputs (S3), no overwrite (T7)."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.config import InferSettings, PipelineConfig
from pipeline.errors import DatasetError, InvalidInputError
from pipeline.inference.bundle import load_bundle
from pipeline.inference.run import infer_dataset, predict_path
from tests.inference.oracle import oblique_lps_affine, oracle_scan, write_tiny_model

SENTINELS = (b"DOE", b"JOHN", b"MRN123")
FORMATS = ("nifti", "seg_nrrd", "slicer_colors", "itksnap", "dicom_seg")


def _patient_named_scan(folder):
    image, _ = oracle_scan()
    nifti = nib.Nifti1Image(image.astype(np.int16), oblique_lps_affine())
    nifti.header["descrip"] = b"DOE^JOHN MRN123 abdomen"
    nifti.header["aux_file"] = b"MRN123"
    nifti.set_qform(oblique_lps_affine(), code=2)
    path = folder / "DOE^JOHN_MRN123.nii.gz"
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nifti, path)
    return path


def _settings(model_dir) -> InferSettings:
    return InferSettings(models=(model_dir,), largest_component=())


def test_predict_writes_masks_on_the_scan_geometry_without_identifiers(tmp_path):
    source = _patient_named_scan(tmp_path / "in")
    model = write_tiny_model(tmp_path / "model")
    written = predict_path(source, tmp_path / "out", _settings(model), FORMATS)
    files = written[str(source)]
    name = files[0].parent.name
    assert [f.name for f in files] == [f"{name}_seg.nii.gz", f"{name}.seg.nrrd", f"{name}_entropy.nii.gz",
                                       f"{name}_mutual_information.nii.gz"]  # fmt: skip
    entropy_map, information = nib.load(files[2]), nib.load(files[3])
    assert entropy_map.shape == nib.load(source).shape and np.allclose(entropy_map.affine, nib.load(source).affine, atol=1e-5)
    values = np.asarray(entropy_map.dataobj)
    assert values.min() >= 0 and values.max() <= np.log(3) + 1e-5 and values.max() > 0  # 3 classes: at most log 3
    assert np.array_equal(np.asarray(information.dataobj), np.zeros(information.shape))  # one model, no mirrors: 0
    qa = json.loads((tmp_path / "out" / "qa.json").read_text())
    assert qa[name]["status"] == "pass" and "no training envelope" in qa[name]["reasons"][0]
    assert files[0].parent.name.startswith("scan-") and len(files[0].parent.name) == 17
    mask = nib.load(files[0])
    original = nib.load(source)
    assert mask.shape == original.shape and mask.get_data_dtype() == np.uint8
    assert np.allclose(mask.affine, original.affine, atol=1e-5)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}
    outputs = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert {p.name for p in outputs} >= {"labels.ctbl", "itksnap_labels.txt"}
    for path in outputs:
        raw = path.read_bytes()
        content = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        assert not any(s in content or s in str(path).encode() for s in SENTINELS), path


def test_existing_outputs_are_refused_unless_overwrite(tmp_path):
    source = _patient_named_scan(tmp_path / "in")
    model = write_tiny_model(tmp_path / "model")
    first = predict_path(source, tmp_path / "out", _settings(model), ("nifti",), naming="source")
    mask_path = first[str(source)][0]
    before = mask_path.read_bytes()
    with pytest.raises(DatasetError) as refused:
        predict_path(source, tmp_path / "out", _settings(model), ("nifti",), naming="source")
    assert "[T7]" in str(refused.value) and str(mask_path.parent) in str(refused.value)
    assert mask_path.read_bytes() == before
    again = predict_path(source, tmp_path / "out", _settings(model), ("nifti",), naming="source", overwrite=True)
    assert again[str(source)][0] == mask_path


def test_a_bad_scan_is_reported_with_the_others_and_nothing_is_half_written(tmp_path):
    folder = tmp_path / "in"
    good = _patient_named_scan(folder)
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    model = write_tiny_model(tmp_path / "model")
    with pytest.raises(DatasetError) as failed:
        predict_path(folder, tmp_path / "out", _settings(model), ("nifti",), naming="source")
    assert "broken.nii.gz" in str(failed.value) and "1 of 2" in str(failed.value)
    assert (tmp_path / "out" / good.name.removesuffix(".nii.gz")).is_dir()
    assert not list((tmp_path / "out").rglob("*.tmp-*"))


def test_load_bundle_lists_mismatched_weights(tmp_path):
    model = write_tiny_model(tmp_path / "model")
    card = json.loads((model / "model_card.json").read_text())
    card["model"]["widths"] = [4, 16]
    (model / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(InvalidInputError) as wrong:
        load_bundle(model, torch.device("cpu"))
    assert "model.pt" in str(wrong.value) and "shape" in str(wrong.value) and "decoder" in str(wrong.value)
    with pytest.raises(InvalidInputError, match="no model card"):
        load_bundle(tmp_path / "elsewhere", torch.device("cpu"))


def test_infer_dataset_writes_each_test_scan_on_its_grid(tiny_phantom, tmp_path):
    model = write_tiny_model(tmp_path / "model")
    cfg = PipelineConfig(data={"root": tiny_phantom}, infer={"models": [model], "out_dir": tmp_path / "pred"})
    summary = infer_dataset(cfg)
    assert list(summary.seconds_per_case) == ["phantom_test_000"]
    assert "seconds_per_case" not in json.loads(summary.path.read_text())  # a DVC output: no clock figures
    image = nib.load(tiny_phantom / "imagesTs" / "phantom_test_000.nii.gz")
    mask = nib.load(tmp_path / "pred" / "phantom_test_000.nii.gz")
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine, atol=1e-5)
    with pytest.raises(DatasetError, match="T7"):
        infer_dataset(cfg)


def test_predict_cli_names_every_bad_header_writes_the_good_scan_and_prints_no_traceback(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app
    from tests.data.test_verify import patch_header, save_with_forms

    folder = tmp_path / "in"
    good = _patient_named_scan(folder)
    image = np.asarray(nib.load(good).dataobj)
    sheared = oblique_lps_affine()
    sheared[0, 1] += 0.4
    nib.save(nib.Nifti1Image(image, sheared), folder / "sheared.nii.gz")
    moved = oblique_lps_affine()
    moved[:3, 3] += 10.0
    save_with_forms(folder / "forms.nii.gz", image, qform=moved, sform=oblique_lps_affine())
    nib.save(nib.Nifti1Image(image, oblique_lps_affine()), folder / "flat.nii.gz")
    patch_header(folder / "flat.nii.gz", pixdim3=0.0)
    model = write_tiny_model(tmp_path / "model")
    result = CliRunner().invoke(app, ["predict", str(folder), str(tmp_path / "out"), "--model", str(model), "--naming", "source"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    for name, code in (("sheared", "G4"), ("forms", "G9"), ("flat", "G11")):
        assert f"{folder / name}.nii.gz: error [{code}] (case {name})" in result.output
    assert "prediction failed for 3 of 4 scan(s)" in result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [good.name.removesuffix(".nii.gz"), "qa.json"]
    qa = json.loads((tmp_path / "out" / "qa.json").read_text())
    assert {k: v["status"] for k, v in qa.items()} == {
        "DOE^JOHN_MRN123": "pass",
        "sheared": "error",
        "forms": "error",
        "flat": "error",
    }


def test_a_full_disk_stops_predict_cleanly_and_keeps_earlier_results(tmp_path, monkeypatch):
    import errno

    import pipeline.export.run as export_run
    from pipeline.errors import DiskFullError

    source = _patient_named_scan(tmp_path / "in")
    model = write_tiny_model(tmp_path / "model")
    first = predict_path(source, tmp_path / "out", _settings(model), ("nifti", "seg_nrrd"), naming="source")
    before = {p: p.read_bytes() for p in first[str(source)]}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_run, "write_seg_nrrd", full)
    with pytest.raises(DiskFullError) as stopped:
        predict_path(source, tmp_path / "out", _settings(model), ("nifti", "seg_nrrd"), naming="source", overwrite=True)
    assert str(stopped.value).startswith(f"{source}: [P5] no space left")
    assert {p: p.read_bytes() for p in before} == before  # the earlier, complete result is untouched
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [source.name.removesuffix(".nii.gz"), "qa.json"]


def test_a_library_error_in_one_export_becomes_our_error_naming_the_scan(tmp_path, monkeypatch):
    import pipeline.export.run as export_run

    folder = tmp_path / "in"
    good = _patient_named_scan(folder)
    (folder / "second.nii.gz").write_bytes(good.read_bytes())
    calls = []

    def flaky(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise ValueError("the scan changed on disk while it was exported")
        return original(path, *args, **kwargs)

    original = export_run.write_seg_nrrd
    monkeypatch.setattr(export_run, "write_seg_nrrd", flaky)
    model = write_tiny_model(tmp_path / "model")
    with pytest.raises(DatasetError) as failed:
        predict_path(folder, tmp_path / "out", _settings(model), ("nifti", "seg_nrrd"), naming="source")
    (problem,) = failed.value.problems
    assert (problem.path, problem.case, problem.code) == (str(folder / "second.nii.gz"), "second", "P3")
    assert problem.message == "ValueError: the scan changed on disk while it was exported"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        good.name.removesuffix(".nii.gz"),
        "qa.json",
    ]  # no half folder
