"""``dvc repro`` on a temporary copy of the project (shrunk configs) runs every stage, declares metrics and
plots that ``dvc metrics show`` / ``dvc plots show`` read, tracks training in MLflow, and a second run
re-runs nothing."""

from __future__ import annotations

import json
import shutil
import subprocess

import nibabel as nib
import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def _run(cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, encoding="utf-8", check=False)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.mark.parametrize("modality", ["CT", "MR+MR"])
def test_dvc_repro_runs_the_stages_then_is_up_to_date(tmp_path, modality):
    """The CT phantom at 8 x 8 x 10 mm (a recorded spacing override), and the brain MR phantom at its own 1 mm laid out
    as a real multi-modal MSD task (``Task05_Prostate``): two channels in one 4D file per case, and test scans without
    ground truth. Planned with nothing set but the tiny profile (and ``data.root``)."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pipeline", "configs"):
        shutil.copytree(REPO_ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "dvc.yaml", project / "dvc.yaml")
    params_path = project / "configs" / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["synth"].update(
        n_labeled=3, n_test=1, n_unlabeled=1, matrix=64, inplane_spacing_mm=[5.2, 5.6], slice_spacing_mm=[8.0, 10.0]
    )
    if modality == "CT":
        params["preprocess"]["spacing_mm"] = [8.0, 8.0, 10.0]
    else:
        params["synth"].update(modality="MR", matrix=40)
        # on 40-voxel heads the bias probe leaves N4 off (it measured it lowering the classes' separation); setting it
        # keeps the end-to-end check that inference corrects a scan exactly as preprocessing did
        params["preprocess"]["mr_bias_correction"] = "n4"
    root = project / params["data"]["root"]
    if modality == "MR+MR":
        root = _two_channel_copy(params["synth"], project / "data" / "packed")
        params["data"]["root"] = "data/packed"
    params["plan"]["profile"] = "tiny"  # two-stage networks of widths 4 and 8, two steps
    params["crossval"]["folds"] = 3  # three labelled cases
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    for name in ("unet2d", "vnet3d", "pretrain_unet2d", "pretrain_vnet3d"):
        _shrink_training(project / "configs" / f"{name}.yaml")
    _run(["git", "init", "-q"], project)
    _run(["dvc", "init", "-q"], project)
    _run(["dvc", "config", "core.analytics", "false"], project)

    first = _run(["dvc", "repro"], project)
    stages = (
        "synth",
        "verify",
        "plan",
        "preprocess",
        "pretrain_unet2d",
        "pretrain_vnet3d",
        "train_unet2d@0",
        "train_vnet3d@0",
        "crossval",
        "infer",
        "evaluate",
        "export",
    )
    for stage in stages:
        assert f"Running stage '{stage}'" in first
    assert "wrote models/unet2d/fold_0/model.pt and reports/train_unet2d/fold_0/metrics.json" in first
    manifest = json.loads((project / "data" / "preprocessed" / "fullres" / "dataset.json").read_text())
    assert len(manifest["cases"]) == 5
    plans = json.loads((project / "reports" / "plan" / "plans.json").read_text())
    assert plans["profile"] == "tiny" and plans["modalities"] == modality.split("+")
    if modality == "CT":
        assert plans["overrides"] == {"preprocess.spacing_mm": "[8.0, 8.0, 10.0]"}
    else:
        assert plans["overrides"] == {"preprocess.mr_bias_correction": "n4"} and plans["fullres_spacing"] == [1.0, 1.0, 1.0]
        assert [n["scheme"] for n in plans["normalisation"]] == ["zscore"] * len(plans["modalities"])
        probe = json.loads((project / "reports" / "plan" / "fingerprint.json").read_text())["bias_correction_probe"]
        assert [(p["channel"], p["cases"]) for p in probe] == [("MR", 3), ("MR", 3)]
        assert all(p["none"] > 0 and p["n4"] > 0 for p in probe)
        assert plans["bias_probe"] == probe  # the plan carries its evidence (printed by `segpipe plan`)
        assert {n["bias_correction"] for n in plans["normalisation"]} == {"n4"} and manifest["labels"]["2"] == "ventricles"
        _assert_inference_prepares_a_scan_as_preprocessing_did(project, root)
    assert json.loads((project / "reports" / "verify.json").read_text())["num_errors"] == 0
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(stages)
    for model in ("unet2d", "vnet3d"):
        assert (project / "models" / model / "fold_0" / "model.pt").is_file()
    splits = json.loads((project / "reports" / "crossval" / "splits.json").read_text())
    prefix = "phantom" if modality == "CT" else "brain"
    assert len(splits) == 3 and sorted(c for f in splits for c in f["val"]) == [f"{prefix}_{i:03d}" for i in range(3)]
    decisions = json.loads((project / "reports" / "crossval" / "decisions.json").read_text())
    assert decisions["cases"] == 1 and decisions["folds"] == [0]
    assert set(decisions["scores"]) == {"unet2d", "vnet3d", "unet2d+vnet3d", "chosen+postprocessing"}
    # largest components are tried only for structures of a fixed number of objects in every training label, keeping
    # that many: liver and spleen one each and the kidneys two (each kidney touches the liver or the spleen, so the
    # foreground is two pieces); on the 40-voxel heads the lesion is one piece, while the ventricles (and the
    # foreground) are two pieces in two training cases and one in the third, so they get no count
    counts = {"1": 1, "2": 1, "3": 2} if modality == "CT" else {"1": 1}
    assert decisions["object_counts"] == {"foreground": 2 if modality == "CT" else 0, "classes": counts}
    postprocessing = decisions["postprocessing"]
    assert set(postprocessing["largest_component_classes"]) <= {int(v) for v in counts}
    assert all(counts[v] == k for v, k in postprocessing.get("components_kept", {}).items() if v != "foreground")
    inference = json.loads((project / "predictions" / "inference.json").read_text())
    assert inference["models"] == decisions["models"]
    assert decisions["temperature"] == decisions["temperatures"]["chosen"] > 0  # fitted out of fold, applied by infer
    qa = json.loads((project / "predictions" / "qa.json").read_text())
    assert [v["status"] for v in qa.values()] == ["pass"]  # the phantom's own test scan is inside its training envelope
    card = json.loads((project / "models" / "unet2d" / "fold_0" / "model_card.json").read_text())
    assert card["envelope"]["modality"] == modality.split("+")[0] and card["envelope"]["cases"] == 3  # the gate reads channel 0
    assert card["modalities"] == modality.split("+") and card["in_channels"] == 3 * len(card["modalities"])  # 2.5D: 3 slices
    evaluated = json.loads((project / "reports" / "evaluate" / "metrics.json").read_text())
    rows = (project / "reports" / "evaluate" / "details" / "cases.csv").read_text().splitlines()
    assert rows[0].endswith("entropy_inside,entropy_boundary") and all(row.split(",")[-1] for row in rows[1:])
    test_truth = modality != "MR+MR"
    if test_truth:
        assert {"ece_before", "ece_after", "brier_before", "nll_after", "temperature"} <= set(evaluated)
        assert evaluated["temperature"] == decisions["temperature"]
    else:  # no labelsTs: evaluate reports what cross-validation measured instead of failing the pipeline
        chosen = decisions["scores"]["chosen+postprocessing"]
        assert evaluated["cases"] == 0 and len(rows) == 1 and evaluated["oof_cases"] == decisions["cases"]
        assert evaluated["oof_dice_mean"] == chosen["dice_mean"] and evaluated["oof_dice_lesion"] == chosen["dice_lesion"]
        assert evaluated["oof_ece_after"] == decisions["calibration"]["oof_ece_after"]
    case = f"{prefix}_test_000"
    for name in ("entropy", "mutual_information"):
        exported = nib.load(project / "exports" / case / f"{case}_{name}.nii.gz")
        assert exported.shape == nib.load(project / "predictions" / f"{case}.nii.gz").shape
    metrics = json.loads(_run(["dvc", "metrics", "show", "--json"], project))
    shown = json.dumps(metrics)
    assert "reports/train_unet2d/fold_0/metrics.json" in shown and "val_dice_mean" in shown
    assert "reports/train_vnet3d/fold_0/metrics.json" in shown
    assert "reports/evaluate/metrics.json" in shown and ("hd95_mm_mean" if test_truth else "oof_dice_mean") in shown
    _assert_exports_lie_on_the_test_scans(project, root, f"{prefix}_test_000")
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], project))
    assert "errors" not in plots, plots.get("errors")
    assert sorted(plots["data"]) == sorted([
        "pretraining loss (denoising autoencoders)", "pretraining held-out reconstruction MSE", "training loss",
        "validation Dice (mean over organs)"])  # fmt: skip
    assert all(item["content"]["data"]["values"] for value in plots["data"].values() for item in value)
    _assert_mlflow_runs(project, "dice_mean" if test_truth else "oof_dice_mean", "ece_after" if test_truth else "oof_ece_after")

    second = _run(["dvc", "repro"], project)
    assert "Running stage" not in second
    assert "up to date" in second
    if modality == "CT":
        _assert_a_copy_elsewhere_reproduces_the_lock(project, tmp_path / "elsewhere")


def _assert_a_copy_elsewhere_reproduces_the_lock(project, copy):
    """The same project run from scratch in another folder writes the same ``dvc.lock``, byte for byte: no DVC output
    holds a clock's figure, a folder's path or the commit of the results (issue 11's fresh-clone check, on this CPU)."""
    copy.mkdir()
    for name in ("pipeline", "configs"):
        shutil.copytree(project / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(project / "dvc.yaml", copy / "dvc.yaml")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"], ["dvc", "repro"]):
        _run(command, copy)
    assert (copy / "dvc.lock").read_bytes() == (project / "dvc.lock").read_bytes()


def _assert_exports_lie_on_the_test_scans(project, root, case):
    import nibabel as nib
    import numpy as np

    scan = nib.load(root / "imagesTs" / f"{case}.nii.gz")
    for path in (project / "predictions" / f"{case}.nii.gz", project / "exports" / case / f"{case}_seg.nii.gz"):
        mask = nib.load(path)
        assert mask.shape == scan.shape[:3] and np.allclose(mask.affine, scan.affine, atol=1e-5)
    assert (project / "exports" / case / f"{case}.seg.nrrd").is_file()
    assert (project / "reports" / "evaluate" / "details" / "qc" / "index.html").is_file() == (root / "labelsTs").is_dir()


def _two_channel_copy(synth: dict, root):
    """The brain MR phantom as a multi-modal MSD dataset: each image and a second contrast (its square root) stacked in
    one 4D file ``(x, y, z, 2)``; labels as they are."""
    import nibabel as nib
    import numpy as np

    from pipeline.config import SynthSettings
    from pipeline.data.mr_phantom import generate_mr_dataset

    generate_mr_dataset(SynthSettings(**{**synth, "out_dir": root}))
    meta = json.loads((root / "dataset.json").read_text())
    images = [e["image"] for e in meta["training"]] + list(meta["test"]) + list(meta["unlabeled"])
    for name in images:
        scan = nib.load(root / name)
        first = np.asarray(scan.dataobj, np.float32)
        stacked = np.stack([first, 10 * np.sqrt(first)], axis=-1)
        nib.save(nib.Nifti1Image(stacked, scan.affine), root / name)
    meta["modality"] = {"0": "MR", "1": "MR"}
    (root / "dataset.json").write_text(json.dumps(meta))
    shutil.rmtree(root / "labelsTs")  # as in the MSD tarballs: test images without labels
    return root


def _assert_inference_prepares_a_scan_as_preprocessing_did(project, root):
    """The test scan through the model card's plan (inference) gives the preprocess stage's array to the bit: the N4
    bias correction and z-score are one function on both paths."""
    import numpy as np
    import torch

    from pipeline.data.layout import load_dataset
    from pipeline.inference.bundle import load_bundle
    from pipeline.preprocess.reading import read_case
    from pipeline.preprocess.run import transform_case

    bundle = load_bundle(project / "models" / "vnet3d" / "fold_0", torch.device("cpu"))
    assert bundle.plan.bias_correction == (True,) * len(bundle.modalities)
    case = next(c for c in load_dataset(root).cases if c.split == "test")
    image, affine, _ = read_case(case, set(bundle.labels.values), bundle.plan.checks)
    _, prepared, _ = transform_case(image, affine, None, bundle.plan)
    grid = json.loads((project / "models" / "vnet3d" / "fold_0" / "model_card.json").read_text())["plan"]
    stored = np.load(project / "data" / "preprocessed" / grid["configuration"]["data_identifier"] / "cases" / case.case_id
                     / "image.npy")  # fmt: skip
    assert np.array_equal(prepared, stored)


def _shrink_training(path):
    """The tiny profile plans network and steps; pretraining's own length and the held-out cases are set here."""
    config = yaml.safe_load(path.read_text())
    for key in ("iterations_per_epoch", "max_epochs", "val_every"):
        config["train"].pop(key, None)
    config["train"].update(val_cases=1, overlay_cases=1)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def _assert_mlflow_runs(project, dice_key: str, ece_key: str):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("segpipe").experiment_id])
    stages = {r.data.tags["dvc_stage"]: r for r in runs}
    assert sorted(stages) == [
        "crossval", "evaluate", "infer", "pretrain_unet2d", "pretrain_vnet3d", "train_unet2d@0", "train_vnet3d@0"]  # fmt: skip
    assert "oof_unet2d_vnet3d_dice_mean" in stages["crossval"].data.metrics
    assert dice_key in stages["evaluate"].data.metrics and ece_key in stages["evaluate"].data.metrics
    assert stages["infer"].data.metrics["gate_pass"] == 1 and stages["infer"].data.metrics["gate_refuse"] == 0
    assert all(r.info.status == "FINISHED" for r in runs)
    for model in ("unet2d", "vnet3d"):
        assert "val_dice_mean" in stages[f"train_{model}@0"].data.metrics
        assert "val_reconstruction_mse" in stages[f"pretrain_{model}"].data.metrics
        assert stages[f"train_{model}@0"].data.tags["init_from"] == f"models/pretrain_{model}/encoder.pt"
        assert stages[f"train_{model}@0"].data.tags["plan_overrides"] == "none"
        assert stages[f"train_{model}@0"].data.params["model.widths"] == "[4, 8]"
        assert stages[f"train_{model}@0"].data.params["train.fold"] == "0"


def test_natural_pipeline_is_separate_and_prepares_the_scenes(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pipeline", "configs", "natural"):
        shutil.copytree(REPO_ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "dvc.yaml", project / "dvc.yaml")
    params_path = project / "configs" / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["scenes"].update(n_train=4, n_val=2, size=64)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], project)
    _run(["dvc", "init", "-q"], project)
    default = _run(["dvc", "stage", "list"], project)  # what a plain `dvc repro` runs: ./dvc.yaml
    assert "synth" in default and "natural" not in default and "train@" not in default
    natural = _run(["dvc", "repro", "natural/dvc.yaml:prepare"], project)
    assert "Running stage 'natural/dvc.yaml:scenes'" in natural and "Running stage 'natural/dvc.yaml:prepare'" in natural
    manifest = json.loads((project / "data" / "natural" / "dataset.json").read_text())
    assert [c["split"] for c in manifest["cases"]] == ["train"] * 4 + ["test"] * 2
    assert manifest["labels"] == {"0": "background", "1": "disc", "2": "box", "3": "triangle", "4": "star"}
    planned = _run(["dvc", "repro", "--dry", "natural/dvc.yaml"], project)
    assert planned.count("Running stage 'natural/dvc.yaml:train@") == 16  # 15 semantic architectures + Mask R-CNN
    # changing a shared setting in the one base file makes every architecture's stage stale
    base = project / "configs" / "natural" / "base.yaml"
    base.write_text(base.read_text().replace("batch_size: 8", "batch_size: 4"))
    status = _run(["dvc", "status", "natural/dvc.yaml"], project)
    assert status.count("configs/natural/base.yaml") >= 15


@pytest.mark.parametrize("dvc_file", ["dvc.yaml", "natural/dvc.yaml"])
def test_every_stage_lists_the_code_that_defines_its_defaults_and_every_section_it_reads(dvc_file):
    """P2: a changed default (pipeline/config) or setting makes the stage stale; readers list the shared `checks`."""
    stages = yaml.safe_load((REPO_ROOT / dvc_file).read_text())["stages"]
    for name, stage in stages.items():
        stage = stage.get("do", stage)
        assert "pipeline/config" in stage["deps"], name
        sections = {s for entry in stage["params"] for listed in entry.values() for s in listed}
        if name in {"verify", "plan", "preprocess", "crossval", "infer", "evaluate", "export"}:
            assert {"data", "checks"} <= sections, name


def test_training_stages_list_every_pipeline_module_training_imports():
    """P2: a change to any code that shapes a trained model makes its stage stale. The modules a fresh process imports
    to train (and pretrain) must each lie under a dependency of every training stage; only MLflow logging
    (pipeline/tracking) and the error classes are left out on purpose."""
    probe = (
        "import sys, pipeline.training.engine, pipeline.training.tasks, pipeline.training.finalize, "
        "pipeline.models.unet2d, pipeline.models.vnet3d, pipeline.models.autoencoders, pipeline.inference.postprocess; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('pipeline.'))))"
    )
    loaded = subprocess.run(["python", "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    files = {m.replace(".", "/") for m in loaded}
    files = {f for f in files if not f.startswith(("pipeline/tracking", "pipeline/errors"))}
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name in ("pretrain_unet2d", "pretrain_vnet3d", "train_unet2d", "train_vnet3d"):
        deps = [d.removesuffix(".py") for d in stages[name].get("do", stages[name])["deps"] if d.startswith("pipeline")]
        uncovered = sorted(
            f for f in files if (REPO_ROOT / f).is_dir() is False and not any(f == d or f.startswith(d + "/") for d in deps)
        )
        assert not uncovered, f"{name} does not list {uncovered}"
