"""Autoencoder pretraining through the same engine, and transfer of its encoder into the U-Net."""

from __future__ import annotations

import json

import torch

from pipeline.training import engine as engine_module
from pipeline.training.engine import train_model
from tests.conftest import tiny_train_config


def test_pretraining_writes_encoder_that_initialises_and_can_freeze_the_unet(tiny_preprocessed, tmp_path, monkeypatch):
    pre = tiny_train_config(tiny_preprocessed, tmp_path / "pre", "autoencoder", model={"variant": "variational"})
    metrics = train_model(pre, stage="pretrain_test")
    # 2 unlabeled + 4 training images (labels unused), 1 of them held out for validation
    assert metrics["pretraining_cases"] == 5 and metrics["val_reconstruction_mse"] > 0
    history = json.loads((tmp_path / "pre" / "reports" / "details" / "history.json").read_text())
    assert all("val_reconstruction_mse" in h for h in history) and all("val_dice_mean" not in h for h in history)
    assert (tmp_path / "pre" / "reports" / "details" / "reconstructions.png").stat().st_size > 5000
    encoder = torch.load(tmp_path / "pre" / "model" / "encoder.pt", weights_only=True)
    assert encoder and all(k.startswith("encoder.") for k in encoder)

    seg = tiny_train_config(
        tiny_preprocessed,
        tmp_path / "seg",
        train={"init_from": str(tmp_path / "pre" / "model" / "encoder.pt"), "freeze_encoder_epochs": 1, "max_epochs": 1},
        tracking={"enabled": False},
    )
    initial = {}

    def snapshot_then_fit(run, state, tracker):
        initial.update({k: v.clone() for k, v in run.bare_model.state_dict().items()})
        return original_fit(run, state, tracker)

    original_fit = engine_module.fit
    monkeypatch.setattr(engine_module, "fit", snapshot_then_fit)
    train_model(seg)
    trained = torch.load(tmp_path / "seg" / "model" / "model.pt", weights_only=True)
    frozen = [k for k in encoder if k.endswith("weight") and "levels" in k]
    assert frozen and all(torch.equal(initial[k], encoder[k]) for k in frozen)  # loaded from encoder.pt
    assert all(torch.equal(trained[k], encoder[k]) for k in frozen)  # and frozen for the only epoch
    assert not torch.equal(trained["head.weight"], initial["head.weight"])  # while the head trained

    unfrozen = tiny_train_config(
        tiny_preprocessed,
        tmp_path / "seg2",
        train={"init_from": str(tmp_path / "pre" / "model" / "encoder.pt"), "max_epochs": 1},
        tracking={"enabled": False},
    )
    train_model(unfrozen)
    moved = torch.load(tmp_path / "seg2" / "model" / "model.pt", weights_only=True)
    assert any(not torch.equal(moved[k], encoder[k]) for k in frozen)  # without freezing the encoder trains


def test_pretraining_run_is_tracked_with_reconstruction_curve_and_grid(tiny_preprocessed, tmp_path):
    cfg = tiny_train_config(tiny_preprocessed, tmp_path, "autoencoder", model={"variant": "sparse"})
    train_model(cfg, stage="pretrain_unet2d")
    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("segpipe").experiment_id])
    assert run.data.tags["dvc_stage"] == "pretrain_unet2d" and run.data.params["model.variant"] == "sparse"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_reconstruction_mse")] == [1, 2]
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/reconstructions.png" in figures
    assert "encoder.pt" in {a.path for a in client.list_artifacts(run.info.run_id)}
