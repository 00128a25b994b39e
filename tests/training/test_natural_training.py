"""The shared engine trains a natural-image architecture on generated scenes: RGB in, mIoU and pixel accuracy tracked."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from pipeline.config import PipelineConfig, ScenesSettings
from pipeline.data.scenes import CLASSES, generate_scenes
from pipeline.preprocess.natural import prepare_natural
from pipeline.training.engine import train_model
from tests.conftest import crf_available, require_optional


def scenes_config(tmp_path, model: dict, n_train: int, n_val: int, **train) -> PipelineConfig:
    """Tiny generated scenes, prepared, and a config that trains ``model`` on them for seconds."""
    root = generate_scenes(ScenesSettings(out_dir=tmp_path / "scenes", n_train=n_train, n_val=n_val, size=64))
    raw = {
        "base": {"seed": 0, "num_workers": 0},
        "natural": {"root": str(root), "out_dir": str(tmp_path / "natural")},
        "preprocess": {"out_dir": str(tmp_path / "natural")},
        "model": model,
        "augment": {"flip_axes": [0], "gamma_prob": 0.0},
        "train": {
            "out_dir": str(tmp_path / "model"),
            "checkpoint_dir": str(tmp_path / "checkpoints"),
            "reports_dir": str(tmp_path / "reports"),
            "patch_size": [64, 64],
            "batch_size": 2,
            "device": "cpu",
            **train,
        },
        "tracking": {
            "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "artifact_root": str(tmp_path / "art"),
            "log_model": False,
        },
    }
    cfg = PipelineConfig.model_validate(raw)
    prepare_natural(cfg)
    return cfg


@pytest.mark.slow
def test_segnet_trains_on_scenes_with_miou_in_mlflow(tmp_path):
    model = {"name": "segnet", "widths": [4, 8, 16, 16, 16]}
    train = {"iterations_per_epoch": 2, "max_epochs": 2, "val_every": 1, "val_cases": 2, "overlay_cases": 1}
    cfg = scenes_config(tmp_path, model, n_train=6, n_val=2, **train)
    metrics = train_model(cfg, stage="natural_segnet")
    history = json.loads((tmp_path / "reports" / "details" / "history.json").read_text())
    best = next(h for h in history if h["epoch"] == metrics["best_epoch"])
    assert (metrics["val_miou"], metrics["val_pixel_accuracy"]) == (best["val_miou"], best["val_pixel_accuracy"])
    assert metrics["val_miou"] == max(h["val_miou"] for h in history if "val_miou" in h)
    written = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert written["test_miou"] == metrics["test_miou"] and written["val_pixel_accuracy"] == metrics["val_pixel_accuracy"]
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert list(card["labels"].values()) == list(CLASSES) and card["in_channels"] == 3
    overlays = list((tmp_path / "reports" / "details").glob("overlay_*.png"))
    assert len(overlays) == 1 and overlays[0].stat().st_size > 5_000
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("segpipe").experiment_id])
    history = client.get_metric_history(run.info.run_id, "val_miou")
    assert [m.step for m in history] == [1, 2]
    assert metrics["val_miou"] in [m.value for m in history]  # the best epoch's value


def test_deeplab_v1_validation_can_refine_with_the_dense_crf(tmp_path, monkeypatch):
    require_optional("pydensecrf2", crf_available(), "crf")
    from pipeline.training import tasks

    calls = []
    original = tasks.refine_with_crf

    def counting(run, image, probabilities):
        refined = original(run, image, probabilities)
        calls.append((tuple(probabilities.shape), float((refined.sum(0) - 1).abs().max())))
        return refined

    monkeypatch.setattr(tasks, "refine_with_crf", counting)
    model = {"name": "deeplabv1", "widths": [4, 8, 16, 16, 16], "fc_width": 16, "fc_dilation": 2, "crf": True}
    cfg = scenes_config(tmp_path, model, n_train=4, n_val=1, iterations_per_epoch=1, max_epochs=1, val_cases=1, overlay_cases=0)
    metrics = train_model(cfg, stage="natural_deeplabv1_crf")
    assert len(calls) == 2  # the validation case and the one test case
    assert all(shape == (5, 64, 64, 1) and error < 1e-3 for shape, error in calls)
    assert json.loads((tmp_path / "reports" / "metrics.json").read_text())["test_miou"] == metrics["test_miou"]


@pytest.mark.slow
def test_mask_rcnn_trains_through_the_engine_with_coco_ap_in_mlflow(tmp_path):
    from types import SimpleNamespace

    import torch

    from pipeline.evaluation.coco import coco_metrics
    from pipeline.models import build_model
    from pipeline.training.data import load_case, read_manifest
    from pipeline.training.detection import DetectionTask

    model = {"name": "mask_rcnn", "depth": 18, "width": 8, "fpn_channels": 32, "box_head_width": 64, "mask_head_channels": 16}
    train = {"iterations_per_epoch": 3, "max_epochs": 2, "val_every": 1, "val_cases": 2, "overlay_cases": 1}
    cfg = scenes_config(tmp_path, model, n_train=6, n_val=2, **train)
    metrics = train_model(cfg, stage="natural_mask_rcnn")
    history = json.loads((tmp_path / "reports" / "details" / "history.json").read_text())
    keys = [f"val_{k}_{m}" for k in ("box", "mask") for m in ("ap", "ap50", "ap75")] + ["val_miou", "val_pixel_accuracy"]
    assert all(0.0 <= h[k] <= 1.0 for h in history for k in keys)
    assert metrics["val_mask_ap"] == max(h["val_mask_ap"] for h in history)
    # the written model reproduces the test AP it reports (weights load with weights_only, same detections)
    network = build_model(cfg.model, 3, len(CLASSES))
    network.load_state_dict(torch.load(tmp_path / "model" / "model.pt", weights_only=True))
    network.eval()
    manifest = read_manifest(cfg.preprocess.out_dir)
    run = SimpleNamespace(model=network, bare_model=network, device=torch.device("cpu"), cfg=cfg, manifest=manifest)
    scored = [DetectionTask().score_image(run, load_case(manifest, e)) for e in manifest.split("test")]
    recomputed = coco_metrics(scored, len(CLASSES))
    assert all(metrics[f"test_{k}"] == pytest.approx(v, abs=1e-9) for k, v in recomputed.items())
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert card["model"]["name"] == "mask_rcnn" and card["metrics"]["test_mask_ap"] == metrics["test_mask_ap"]
    overlays = list((tmp_path / "reports" / "details").glob("overlay_*.png"))
    assert len(overlays) == 1 and overlays[0].stat().st_size > 5_000
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run_info,) = client.search_runs([client.get_experiment_by_name("segpipe").experiment_id])
    assert [m.step for m in client.get_metric_history(run_info.info.run_id, "val_mask_ap50")] == [1, 2]
    assert client.get_run(run_info.info.run_id).data.metrics["test_box_ap"] == pytest.approx(metrics["test_box_ap"])
