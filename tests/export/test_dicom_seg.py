"""DICOM SEG: read back with highdicom (segments, codes, source references, frames on the source slices) and dciodvfy-clean."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from typer.testing import CliRunner

from pipeline import __version__
from pipeline.cli import app
from pipeline.data.dicom import read_dicom_series, write_ct_series
from pipeline.data.labels import LabelRegistry
from pipeline.export.run import export_case
from pipeline.inference.predict import predict_scan
from tests.conftest import require_optional
from tests.inference.oracle import LABELS, oblique_lps_affine, oracle_predictor, oracle_scan, write_tiny_model


def _series(tmp_path):
    image, truth = oracle_scan()
    affine = oblique_lps_affine()
    write_ct_series(image, affine, tmp_path / "ct", patient_name="PHANTOM^SEG", patient_id="P-42")
    return read_dicom_series(tmp_path / "ct"), truth


def test_dicom_seg_reads_back_with_segments_codes_and_frames_on_the_source_slices(tmp_path):
    series, truth = _series(tmp_path)
    label = predict_scan(oracle_predictor(series.affine), series.array[None], series.affine)
    assert np.array_equal(label, truth)  # the oracle is exact at native spacing, so the SEG content is known
    registry = LabelRegistry.from_mapping(LABELS)
    files = export_case(tmp_path / "out", "case", label, series.affine, registry, ("dicom_seg",), series, ("oracle",))
    seg = hd.seg.segread(files[0])
    assert seg.SegmentationType == "BINARY" and seg.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert seg.get_segment_numbers() == [1, 2]
    described = [seg.get_segment_description(n) for n in (1, 2)]
    assert [d.segment_label for d in described] == ["liver", "spleen"]
    assert [d.segmented_property_type.value for d in described] == ["10200004", "78961009"]
    assert described[0].algorithm_identification[0].AlgorithmVersion == __version__
    sources = [pydicom.dcmread(p) for p in series.files]
    assert seg.PatientID == "P-42" and seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    uids = [ds.SOPInstanceUID for ds in sources]
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    assert np.array_equal(frames, truth.transpose(2, 1, 0))  # frame k = source slice k, rows x columns
    require_optional("dciodvfy", shutil.which("dciodvfy") is not None, "dev")
    report = subprocess.run([shutil.which("dciodvfy"), str(files[0])], capture_output=True, text=True, encoding="utf-8")
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors


def test_predict_cli_on_a_dicom_folder_writes_seg_and_nifti_on_the_series_grid(tmp_path):
    series, _ = _series(tmp_path)
    model = write_tiny_model(tmp_path / "model")
    args = ["predict", str(tmp_path / "ct"), str(tmp_path / "out"), "--model", str(model), "infer.largest_component=[]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (folder,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"{folder.name}{suffix}" for suffix in (".seg.nrrd", "_entropy.nii.gz", "_mutual_information.nii.gz",
                                                              "_seg.dcm", "_seg.nii.gz")]  # fmt: skip
    mask = nib.load(folder / f"{folder.name}_seg.nii.gz")
    assert mask.shape == series.array.shape and np.allclose(mask.affine, series.affine, atol=1e-5)
    seg = hd.seg.segread(folder / f"{folder.name}_seg.dcm")
    frames = seg.get_pixels_by_source_instance([pydicom.dcmread(p).SOPInstanceUID for p in series.files], combine_segments=True)
    assert np.array_equal(frames, np.asarray(mask.dataobj).transpose(2, 1, 0))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "[T7]" in again.output


def test_a_label_name_longer_than_dicoms_64_characters_is_cut_to_64_without_a_warning():
    import warnings

    from pipeline.export.dicom_seg import _segment

    name = "whole tumor without tumor core, as named from nnU-Net regions, and then some more"
    (label,) = LabelRegistry.from_mapping({0: "background", 1: name}).foreground()
    algorithm = hd.AlgorithmIdentificationSequence(
        name="segpipe", version=__version__, family=hd.sr.CodedConcept("123109", "DCM", "x")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        described = _segment(1, label, algorithm)
    assert len(name) > 64 and described.SegmentLabel == name[:64]
