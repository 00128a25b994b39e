"""The evaluate stage: metrics in the original geometry, CSV, QC report worst first, MLflow run; misaligned masks refused."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from mlflow import MlflowClient

from pipeline.config import PipelineConfig
from pipeline.data.phantom import generate_phantom_dataset
from pipeline.errors import DatasetError
from pipeline.evaluation.run import evaluate_dataset
from pipeline.export.run import export_dataset
from tests.conftest import tiny_synth_settings


@pytest.fixture(scope="module")
def two_test_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval") / "phantom"
    generate_phantom_dataset(tiny_synth_settings(root, n_labeled=1, n_test=2, n_unlabeled=0))
    return root


def _config(root, tmp_path, **evaluate):
    return PipelineConfig(
        data={"root": root},
        infer={"out_dir": tmp_path / "pred"},
        evaluate={"reports_dir": tmp_path / "reports", **evaluate},
        export={"out_dir": tmp_path / "exports"},
        tracking={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "artifact_root": tmp_path / "artifacts"},
    )


def _predict_truth(root, tmp_path, drop_spleen_in=None, shift_affine_in=None):
    (tmp_path / "pred").mkdir(exist_ok=True)
    for truth_path in sorted((root / "labelsTs").glob("*.nii.gz")):
        case = truth_path.name.removesuffix(".nii.gz")
        truth = nib.load(truth_path)
        data, affine = np.asarray(truth.dataobj).copy(), truth.affine.copy()
        if case == drop_spleen_in:
            data[data == 2] = 0
        if case == shift_affine_in:
            affine[0, 3] += 1.0
        nib.save(nib.Nifti1Image(data, affine), tmp_path / "pred" / truth_path.name)


def test_evaluate_scores_reports_worst_first_and_tracks(two_test_cases, tmp_path):
    _predict_truth(two_test_cases, tmp_path, drop_spleen_in="phantom_test_001")
    metrics = evaluate_dataset(_config(two_test_cases, tmp_path), stage="evaluate")
    assert metrics["cases"] == 2 and metrics["dice_liver"] == 1.0 and metrics["dice_kidney"] == 1.0
    assert metrics["dice_spleen"] == pytest.approx(0.5) and metrics["nsd_spleen"] == pytest.approx(0.5)
    image = nib.load(two_test_cases / "imagesTs" / "phantom_test_001.nii.gz")
    diagonal = float(np.linalg.norm(np.asarray(image.shape) * image.header.get_zooms()[:3]))
    assert metrics["hd95_mm_spleen"] == pytest.approx(diagonal / 2, rel=1e-5)
    assert json.loads((tmp_path / "reports" / "metrics.json").read_text()) == metrics
    rows = list(csv.DictReader((tmp_path / "reports" / "details" / "cases.csv").open()))
    assert len(rows) == 6 and {r["organ"] for r in rows} == {"liver", "spleen", "kidney"}
    html = (tmp_path / "reports" / "details" / "qc" / "index.html").read_text()
    assert html.index("phantom_test_001") < html.index("phantom_test_000")
    assert (tmp_path / "reports" / "details" / "qc" / "phantom_test_000.png").stat().st_size > 10_000
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("segpipe").experiment_id])
    assert run.data.metrics["dice_spleen"] == pytest.approx(0.5) and run.data.tags["dvc_stage"] == "evaluate"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, encoding="utf-8", check=True
    ).stdout.strip()
    assert run.data.tags["git_commit"].split("+")[0] == head and len(run.data.tags["data_fingerprint"]) == 32


def test_misaligned_and_missing_predictions_are_reported_together(two_test_cases, tmp_path):
    _predict_truth(two_test_cases, tmp_path, shift_affine_in="phantom_test_000")
    (tmp_path / "pred" / "phantom_test_001.nii.gz").unlink()
    with pytest.raises(DatasetError) as failed:
        evaluate_dataset(_config(two_test_cases, tmp_path))
    message = str(failed.value)
    assert "2 of 2 case(s)" in message and "[G3]" in message and "phantom_test_000.nii.gz" in message
    assert "phantom_test_001.nii.gz" in message
    assert not (tmp_path / "reports" / "metrics.json").exists()


def test_export_writes_viewer_files_for_each_prediction(two_test_cases, tmp_path):
    _predict_truth(two_test_cases, tmp_path)
    summary = json.loads(export_dataset(_config(two_test_cases, tmp_path)).read_text())
    assert sorted(summary["cases"]) == ["phantom_test_000", "phantom_test_001"]
    folder = tmp_path / "exports" / "phantom_test_000"
    assert sorted(p.name for p in folder.iterdir()) == ["phantom_test_000.seg.nrrd", "phantom_test_000_seg.nii.gz"]
    exported = nib.load(folder / "phantom_test_000_seg.nii.gz")
    truth = nib.load(two_test_cases / "labelsTs" / "phantom_test_000.nii.gz")
    assert np.array_equal(np.asarray(exported.dataobj), np.asarray(truth.dataobj))
    assert np.allclose(exported.affine, truth.affine, atol=1e-6)
    assert (tmp_path / "exports" / "labels.ctbl").is_file() and (tmp_path / "exports" / "itksnap_labels.txt").is_file()
    assert summary["skipped"] and "NIfTI" in summary["skipped"][0]
    shutil.rmtree(tmp_path / "pred")
    with pytest.raises(DatasetError, match="T7"):
        export_dataset(_config(two_test_cases, tmp_path))


def test_without_test_ground_truth_the_missing_decisions_are_named_and_nothing_is_written(two_test_cases, tmp_path):
    unlabelled = tmp_path / "msd"
    shutil.copytree(two_test_cases, unlabelled, ignore=shutil.ignore_patterns("labelsTs"))
    cfg = _config(unlabelled, tmp_path, reports_dir=tmp_path / "reports")
    cfg.crossval.decisions = tmp_path / "no" / "decisions.json"
    with pytest.raises(DatasetError) as failed:
        evaluate_dataset(cfg)
    message = str(failed.value)
    assert "no test case with ground truth (labelsTs/)" in message and str(cfg.crossval.decisions) in message
    assert not (tmp_path / "reports" / "metrics.json").exists()


def test_a_region_based_dataset_is_scored_per_label_and_per_region(tmp_path):
    """nnU-Net v2 regions (BraTS-like): value 2 predicted as 1 costs the tumour core (Dice 2 * 64 / 1064), not the whole
    tumour; labels, regions and their mean all reach metrics.json and cases.csv."""
    from tests.conftest import save
    from tests.evaluation.test_metrics import _nested_tumour

    root, truth = tmp_path / "Dataset137_Tiny", _nested_tumour()
    image = (truth * 100 + 50).astype(np.int16)
    for split, case in (("Tr", "a"), ("Ts", "t")):
        save(root / f"images{split}" / f"{case}_0000.nii.gz", image)
        save(root / f"labels{split}" / f"{case}.nii.gz", truth)
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    meta = {"channel_names": {"0": "T2"}, "labels": labels, "regions_class_order": [1, 2, 3], "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    save(tmp_path / "pred" / "t.nii.gz", np.where(truth == 2, 1, truth).astype(np.uint8))
    metrics = evaluate_dataset(_config(root, tmp_path, qc_cases=0), stage="evaluate")
    core = 2 * 64 / (64 + 1000)
    assert metrics["dice_region whole tumor"] == 1.0 and metrics["dice_region enhancing tumor"] == 1.0
    assert metrics["dice_region tumor core"] == pytest.approx(core)
    assert metrics["dice_regions_mean"] == pytest.approx((2 + core) / 3)
    assert metrics["dice_tumor core without enhancing tumor"] == 0.0 and metrics["dice_enhancing tumor"] == 1.0
    assert metrics["dice_whole tumor without tumor core"] == pytest.approx(2 * 3096 / (3096 + 4096 - 64))
    rows = list(csv.DictReader((tmp_path / "reports" / "details" / "cases.csv").open()))
    assert [r["organ"] for r in rows][3:] == ["region whole tumor", "region tumor core", "region enhancing tumor"]
