"""The input gate: refuses what the model was never trained for, passes the phantom test scans, --force overrides."""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.layout import load_dataset
from pipeline.data.mr_phantom import render_mr_case
from pipeline.modelcard import TrainingEnvelope
from pipeline.preprocess.fingerprint import case_fingerprint, compute_fingerprint
from pipeline.qa.gate import gate

THREE_MM = TrainingEnvelope(
    modality="CT", cases=4, spacing_min=(2.5, 2.5, 2.5), spacing_max=(3.0, 3.0, 3.0), extent_min=(300, 200, 250),
    extent_max=(380, 260, 320), percentile_1_min=-1024, percentile_1_max=-990, percentile_50_min=-120, percentile_50_max=-20,
    percentile_99_min=150, percentile_99_max=260,
)  # fmt: skip


def _stats(**changes) -> dict:
    stats = {"percentile_1": -1010.0, "percentile_50": -60.0, "percentile_99": 200.0, "spacing_mm": [2.8, 2.8, 3.0],
             "body_extent_mm": [340.0, 230.0, 280.0]}  # fmt: skip
    return {**stats, **changes}


def test_the_gate_passes_an_ordinary_scan_and_names_every_reason_it_refuses():
    assert gate(_stats(), THREE_MM).status == "pass"
    offset = gate(_stats(percentile_1=14.0, percentile_50=964.0), THREE_MM)
    assert offset.status == "refuse" and "stored values without the rescale" in offset.reasons[0]
    mr = gate(_stats(percentile_1=0.0, percentile_50=120.0, percentile_99=900.0), THREE_MM)
    assert mr.status == "refuse" and "implausible for CT" in mr.reasons[0]
    coarse = gate(_stats(spacing_mm=[10.0, 10.0, 10.0]), THREE_MM)
    assert coarse.status == "refuse" and len(coarse.reasons) == 3
    assert coarse.reasons[0] == "voxel spacing 10 mm along axis x (RAS) is more than 2x above the training range (at most 3 mm)"
    fine = gate(_stats(spacing_mm=[2.8, 2.8, 0.8]), THREE_MM)  # thin slices: resampled to the training grid
    assert fine.status == "warn" and fine.reasons == (
        "voxel spacing 0.8 mm along axis z (RAS) is more than 2x below the training range (at least 2.5 mm)",)  # fmt: skip
    head = gate(_stats(body_extent_mm=[140.0, 90.0, 280.0]), THREE_MM)
    assert head.status == "warn" and [r.split(" (RAS)")[0] for r in head.reasons] == [
        "body extent 140 mm along axis x", "body extent 90 mm along axis y"]  # fmt: skip
    ct_to_mr = gate(_stats(), THREE_MM.model_copy(update={"modality": "MR"}))
    assert ct_to_mr.status == "refuse" and "look like CT Hounsfield units" in ct_to_mr.reasons[0]


def _envelope_and_test_scans(root):
    dataset = load_dataset(root)
    fingerprint, problems = compute_fingerprint(dataset, (0.5, 99.5), 1000, 0, -500.0, 0)
    assert not problems
    fingerprint["modalities"] = list(dataset.modalities)
    return TrainingEnvelope.from_fingerprint(fingerprint), dataset.split("test")


def test_every_phantom_test_scan_passes_and_the_offset_and_mr_versions_are_refused(tiny_phantom, tmp_path):
    envelope, tests = _envelope_and_test_scans(tiny_phantom)
    assert envelope.modality == "CT" and envelope.percentile_1_max < -900  # air, in HU
    for case in tests:
        unlabelled = replace(case, label=None)  # the gate never sees ground truth
        assert gate(case_fingerprint(unlabelled, set(), 1000, 0, -500.0)["scan"], envelope).status == "pass"
    image = nib.load(tests[0].images[0])
    raw = tmp_path / "raw.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) + 1024, image.affine), raw)  # stored values, rescale dropped
    stats = case_fingerprint(type(tests[0])("raw", (raw,), None, "test"), set(), 1000, 0, -500.0)["scan"]
    assert gate(stats, envelope).reasons[0].startswith("air sits near")
    mr_image, _, mr_affine = render_mr_case(_mr_spec(), 0.0)
    mr = tmp_path / "mr.nii.gz"
    nib.save(nib.Nifti1Image(mr_image, mr_affine), mr)
    stats = case_fingerprint(type(tests[0])("mr", (mr,), None, "test"), set(), 1000, 0, -500.0, is_ct=False)["scan"]
    assert gate(stats, envelope).status == "refuse"


def _mr_spec():
    from pipeline.config import SynthSettings
    from pipeline.data.mr_phantom import mr_case_specs

    return mr_case_specs(SynthSettings(modality="MR", n_labeled=1, n_test=0, n_unlabeled=0))["train"][0]


@pytest.fixture()
def gated_model(tiny_phantom, tmp_path):
    from tests.inference.oracle import write_tiny_model

    envelope, tests = _envelope_and_test_scans(tiny_phantom)
    return write_tiny_model(tmp_path / "model", envelope=envelope), tests


def test_a_refused_scan_in_a_folder_of_three_leaves_the_others_written_and_force_records_the_override(gated_model, tmp_path):
    model, tests = gated_model
    folder = tmp_path / "in"
    folder.mkdir()
    image = nib.load(tests[0].images[0])
    data = np.asarray(image.dataobj)
    for name in ("good_a", "good_b"):
        nib.save(nib.Nifti1Image(data, image.affine), folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(data + 1024, image.affine), folder / "raw.nii.gz")
    args = ["predict", str(folder), str(tmp_path / "out"), "--model", str(model), "--naming", "source"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert (
        f"{folder / 'raw.nii.gz'}: error [Q1] (case raw) outside the model's training envelope: air sits near" in refused.output
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_a", "good_b", "qa.json"]
    qa = json.loads((tmp_path / "out" / "qa.json").read_text())
    assert {k: (v["status"], v["forced"]) for k, v in qa.items()} == {
        "good_a": ("pass", False), "good_b": ("pass", False), "raw": ("refuse", False)}  # fmt: skip

    forced = CliRunner().invoke(app, [*args[:2], str(tmp_path / "forced"), *args[3:], "--force"])
    assert forced.exit_code == 0, forced.output
    mask = nib.load(tmp_path / "forced" / "raw" / "raw_seg.nii.gz")
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine, atol=1e-5)
    qa = json.loads((tmp_path / "forced" / "qa.json").read_text())
    assert qa["raw"]["status"] == "refuse" and qa["raw"]["forced"] is True and "air sits near" in qa["raw"]["reasons"][0]
