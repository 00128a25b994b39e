"""The engine end to end on tiny data: outputs, MLflow run, and reliability rows T1, T3, T4, T5, S1."""

from __future__ import annotations

import json
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from pipeline.errors import InvalidInputError
from pipeline.models import build_model
from pipeline.training import checkpoint as checkpoint_module
from pipeline.training import engine as engine_module
from pipeline.training.checkpoint import ResumeRefusedError, load_checkpoint
from pipeline.training.engine import TimeGuardError, TrainingDivergedError, train_model
from pipeline.training.losses import SegmentationLoss
from tests.conftest import tiny_train_config


@pytest.mark.parametrize("model", ["unet2d", "vnet3d"])
def test_tiny_training_writes_model_metrics_and_an_mlflow_run(tiny_preprocessed, tmp_path, model):
    cfg = tiny_train_config(tiny_preprocessed, tmp_path, model, tracking={"log_model": model == "unet2d"})
    metrics = train_model(cfg, stage="test_stage")

    written = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    timings = json.loads((tmp_path / "reports" / "timings.json").read_text())
    assert {**written, **{k: v for k, v in timings.items() if k != "epochs"}} == metrics
    assert set(metrics) - set(written) == {"train_minutes", "samples_per_s"}  # the clock's figures, in timings.json
    history = json.loads((tmp_path / "reports" / "details" / "history.json").read_text())
    validated = {h["epoch"]: h["val_dice_mean"] for h in history if "val_dice_mean" in h}
    assert metrics["epochs"] == 2 and "test_dice_mean" in metrics
    assert metrics["best_epoch"] == max(validated, key=lambda e: (validated[e], -e))  # the best epoch's model is kept
    assert metrics["val_dice_mean"] == validated[metrics["best_epoch"]] == max(validated.values())
    assert metrics["weights"] == "best" and metrics["kept_epoch"] == metrics["best_epoch"]
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["lr"] < history[0]["lr"]  # poly schedule decays
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    network = build_model(cfg.model, card["in_channels"], card["num_classes"])
    network.load_state_dict(state)  # strict: the canonical file is exactly this network's state_dict
    from pipeline.inference.onnx_backend import OnnxNetwork

    window = torch.randn(2, card["in_channels"], *cfg.train.patch_size)
    with torch.no_grad():  # model.onnx beside model.pt computes the same logits (infer.backend=onnx)
        assert torch.allclose(OnnxNetwork(tmp_path / "model" / "model.onnx")(window), network.eval()(window), atol=1e-4)
    assert card["num_classes"] == 4 and card["target_spacing"] == [8.0, 8.0, 10.0]

    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking.tracking_uri)
    experiment = client.get_experiment_by_name("segpipe")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, encoding="utf-8", check=True
    ).stdout.strip()
    assert run.data.tags["dvc_stage"] == "test_stage" and run.data.tags["git_commit"].split("+")[0] == head
    assert run.data.tags["data_fingerprint"] == card["data_fingerprint"]
    assert run.data.params["model.name"] == model and run.data.params["train.max_epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    assert run.data.metrics["val_dice_mean"] == pytest.approx(history[-1]["val_dice_mean"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"config.yaml", "metrics.json", "model_card.json", "model.pt"} <= artifacts
    assert "figures/curves.png" in figures and any(p.startswith("figures/overlay_") for p in figures)
    if model == "unet2d":
        logged = client.search_logged_models([experiment.experiment_id])
        assert len(logged) == 1 and logged[0].source_run_id == run.info.run_id
        import mlflow.pytorch

        mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
        folder = Path(mlflow.artifacts.download_artifacts(f"models:/{logged[0].model_id}", dst_path=str(tmp_path / "dl")))
        files = {p.name for p in folder.rglob("*") if p.is_file()}
        assert "model.pt2" in files and not any(name.endswith((".pkl", ".pth")) or name == "model.pth" for name in files)
        exported = mlflow.pytorch.load_model(f"models:/{logged[0].model_id}")
        network.eval()
        window = torch.randn(3, card["in_channels"], *cfg.train.patch_size)  # batch 3: not the export's example batch
        assert torch.allclose(exported(window), network(window), atol=1e-5)


def _losses(history):
    return [(h["epoch"], round(h["train_loss"], 5), h["lr"]) for h in history]


@pytest.mark.parametrize("weights", ["best", "final"])
def test_train_weights_keeps_the_best_or_the_final_epoch(tiny_preprocessed, tmp_path, monkeypatch, weights):
    """Validation scores that fall (epoch 1 best) make best and final differ; model.pt holds the chosen epoch's weights
    and metrics.json / the card say which."""
    from pipeline.training.tasks import SegmentationTask

    validate, calls = SegmentationTask.validate, []

    def falling(self, run, entries=None, prefix="val"):
        metrics = validate(self, run, entries, prefix)
        if prefix == "val":
            calls.append(1)
            metrics["val_dice_mean"] = 1.0 / len(calls)  # 1.0, then 0.5
        return metrics

    monkeypatch.setattr(SegmentationTask, "validate", falling)
    cfg = tiny_train_config(tiny_preprocessed, tmp_path, "unet2d")
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"weights": weights})})
    metrics = train_model(cfg, stage="test_stage")

    kept = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["model"]
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")["model"]
    assert any(not torch.equal(last[k], best[k]) for k in last)  # two updates apart: the choice is visible
    chosen = best if weights == "best" else last
    assert all(torch.equal(kept[k], chosen[k].cpu()) for k in kept)
    assert metrics["best_epoch"] == 1 and metrics["kept_epoch"] == (1 if weights == "best" else 2)
    assert metrics["weights"] == weights and metrics["val_dice_mean"] == (1.0 if weights == "best" else 0.5)
    card = json.loads((tmp_path / "model" / "model_card.json").read_text())
    assert (card["weights"], card["kept_epoch"], card["best_epoch"]) == (weights, metrics["kept_epoch"], 1)


def test_resume_equals_an_uninterrupted_run(tiny_preprocessed, tmp_path):
    """T3: the time guard stops after epoch 1 and writes no model; resume to epoch 3: same epochs, LR and losses as
    straight through."""
    straight = tiny_train_config(tiny_preprocessed, tmp_path / "a", train={"max_epochs": 3}, tracking={"enabled": False})
    train_model(straight)
    reference = json.loads((tmp_path / "a" / "reports" / "details" / "history.json").read_text())

    cut = tiny_train_config(
        tiny_preprocessed, tmp_path / "b", train={"max_epochs": 3, "max_time_minutes": 1e-6}, tracking={"enabled": False}
    )
    with pytest.raises(TimeGuardError, match=r"after epoch 1 of 3.*train.resume=true"):
        train_model(cut)
    assert not (tmp_path / "b" / "model" / "model.pt").exists()  # no silently shorter model
    resumed = tiny_train_config(
        tiny_preprocessed, tmp_path / "b", train={"max_epochs": 3, "resume": True}, tracking={"enabled": False}
    )
    assert train_model(resumed)["epochs"] == 3
    history = json.loads((tmp_path / "b" / "reports" / "details" / "history.json").read_text())
    assert _losses(history) == _losses(reference)
    assert history[-1]["val_dice_mean"] == pytest.approx(reference[-1]["val_dice_mean"], abs=1e-6)


def test_a_slower_machine_trains_the_same_weights(tiny_preprocessed, tmp_path, monkeypatch):
    """Steps, not minutes, decide the training: a clock running 1000x faster (a slow machine) changes nothing."""
    fast = tiny_train_config(tiny_preprocessed, tmp_path / "fast", train={"max_time_minutes": 1e9}, tracking={"enabled": False})
    train_model(fast)
    real = engine_module.time.perf_counter
    monkeypatch.setattr(engine_module.time, "perf_counter", lambda: real() * 1000)
    slow = tiny_train_config(tiny_preprocessed, tmp_path / "slow", train={"max_time_minutes": 1e9}, tracking={"enabled": False})
    metrics = train_model(slow)
    assert metrics["epochs"] == fast.train.max_epochs and metrics["train_minutes"] > 0.5
    a = torch.load(tmp_path / "fast" / "model" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "slow" / "model" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the files DVC hashes hold no clock figure, so they are byte-identical (dvc.lock reproduces); timings.json has them
    for name in ("metrics.json", "details/history.json", "plots/train.json", "plots/validation.json"):
        assert (tmp_path / "fast" / "reports" / name).read_bytes() == (tmp_path / "slow" / "reports" / name).read_bytes()
    timings = json.loads((tmp_path / "slow" / "reports" / "timings.json").read_text())
    assert timings["train_minutes"] == metrics["train_minutes"] and len(timings["epochs"]) == fast.train.max_epochs
    assert all(epoch["train_time_s"] > 0 for epoch in timings["epochs"])


def test_resume_with_changed_network_or_patch_is_refused_naming_the_keys(tiny_preprocessed, tmp_path):
    """T4."""
    train_model(tiny_train_config(tiny_preprocessed, tmp_path, train={"max_epochs": 1}, tracking={"enabled": False}))
    changed = tiny_train_config(
        tiny_preprocessed,
        tmp_path,
        model={"widths": [4, 16]},
        train={"max_epochs": 1, "resume": True, "patch_size": [48, 48]},
        tracking={"enabled": False},
    )
    with pytest.raises(ResumeRefusedError) as info:
        train_model(changed)
    message = str(info.value)
    assert "last.pt" in message and "model.widths: checkpoint [4, 8] != now [4, 16]" in message
    assert "train.patch_size: checkpoint [32, 32] != now [48, 48]" in message


def test_nan_loss_stops_with_epoch_and_step_and_keeps_checkpoints(tiny_preprocessed, tmp_path, monkeypatch):
    """T5: a NaN at epoch 2 step 1 stops training; last.pt and best.pt of epoch 1 stay as they were."""
    calls = {"n": 0}
    original = SegmentationLoss.forward

    def poisoned(self, logits, target, weight=None):
        calls["n"] += 1
        loss = original(self, logits, target, weight)
        return loss * float("nan") if calls["n"] == 3 else loss  # 2 steps per epoch: call 3 = epoch 2, step 1

    monkeypatch.setattr(SegmentationLoss, "forward", poisoned)
    cfg = tiny_train_config(tiny_preprocessed, tmp_path, tracking={"enabled": True})
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 2, step 1.*last\.pt.*best\.pt.*untouched"):
        train_model(cfg)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    best = load_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert last["epoch"] == 1 and len(last["history"]) == 1 and best["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (tmp_path / "model" / "model.pt").exists()  # no canonical model from a failed run

    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("segpipe").experiment_id])
    assert run.info.status == "FAILED"


def test_crash_during_checkpoint_save_leaves_the_previous_one_valid(tiny_preprocessed, tmp_path, monkeypatch):
    """T1: the save of epoch 2 dies half-way; last.pt still holds epoch 1 and resume continues from it."""
    cfg = tiny_train_config(tiny_preprocessed, tmp_path, tracking={"enabled": False})
    real_save = torch.save
    saves = {"n": 0}

    def dying_save(obj, path, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 3:  # epoch 1 wrote best.pt and last.pt; epoch 2's best.pt save dies
            path.write(b"PK\x03\x04 half a zip")  # the open temporary file (save_torch writes through a handle)
            raise KeyboardInterrupt("killed")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train_model(cfg)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]  # no temporary left behind
    assert load_checkpoint(folder / "last.pt")["epoch"] == 1
    resumed = tiny_train_config(tiny_preprocessed, tmp_path, train={"resume": True}, tracking={"enabled": False})
    assert train_model(resumed)["epochs"] == 2


class _Payload:
    def __reduce__(self):
        return (open, ("/tmp/segpipe-pwned-sentinel", "w"))


def test_checkpoint_with_code_is_rejected_and_does_not_run(tmp_path):
    """S1."""
    import pathlib

    sentinel = pathlib.Path("/tmp/segpipe-pwned-sentinel")
    sentinel.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"model": _Payload()}, path, pickle_module=pickle)
    with pytest.raises(InvalidInputError, match=r"evil\.pt.*weights_only"):
        load_checkpoint(path)
    assert not sentinel.exists()


def test_border_weighted_ce_trains_through_the_engine(tiny_preprocessed, tmp_path):
    cfg = tiny_train_config(
        tiny_preprocessed, tmp_path, loss={"name": "ce_border"}, train={"max_epochs": 1}, tracking={"enabled": False}
    )
    run_metrics = train_model(cfg)
    history = json.loads((tmp_path / "reports" / "details" / "history.json").read_text())
    assert run_metrics["epochs"] == 1 and 0.0 < history[0]["train_loss"] < 100.0


def test_labelled_cases_trains_on_a_seeded_subset_and_keeps_validation(tiny_preprocessed, tmp_path):
    from pipeline.training.setup import build_run

    chosen = set()
    for seed in range(6):
        cfg = tiny_train_config(tiny_preprocessed, tmp_path, base={"seed": seed}, train={"labelled_cases": 1})
        run = build_run(cfg)
        assert len(run.train_cases) == 1 and len(run.val_entries) == 1
        assert run.train_cases[0].case_id not in {e["case_id"] for e in run.val_entries}
        chosen.add(run.train_cases[0].case_id)
    assert len(chosen) >= 2  # the subset depends on the seed


def test_a_finite_loss_with_nan_gradients_stops_before_the_update_and_keeps_checkpoints(tiny_preprocessed, tmp_path, monkeypatch):
    """T5 for gradients: a loss of 0 * sqrt(-1) is finite-looking in the forward pass of a custom op, NaN in backward."""
    calls = {"n": 0}
    original = SegmentationLoss.forward

    class NanGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    def poisoned(self, logits, target, weight=None):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2, step 1
            logits = NanGradient.apply(logits)
        return original(self, logits, target, weight)

    monkeypatch.setattr(SegmentationLoss, "forward", poisoned)
    cfg = tiny_train_config(tiny_preprocessed, tmp_path)
    with pytest.raises(TrainingDivergedError, match=r"gradient of .* became NaN/Inf at epoch 2, step 1: training stopped"):
        train_model(cfg)
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (tmp_path / "model" / "model.pt").exists()


@pytest.mark.parametrize("model", ["unet2d", "vnet3d"])
def test_prefetching_batches_in_a_thread_trains_bit_identical_weights(tiny_preprocessed, tmp_path, model):
    weights = []
    for depth in (0, 2):
        cfg = tiny_train_config(
            tiny_preprocessed,
            tmp_path / str(depth),
            model,
            train={"prefetch_batches": depth, "max_epochs": 2, "iterations_per_epoch": 4},
            augment={"affine_prob": 0.5, "elastic_prob": 0.5, "noise_prob": 0.5},
            tracking={"enabled": False},
        )
        train_model(cfg)
        weights.append(torch.load(tmp_path / str(depth) / "model" / "model.pt", weights_only=True))
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_cache_auto_maps_the_arrays_when_memory_is_short_and_trains_the_same_weights(tiny_preprocessed, tmp_path, monkeypatch):
    from pipeline.training import data as data_module

    manifest = data_module.read_manifest(tiny_preprocessed)
    entries = [e for e in manifest.cases if e.get("label")]
    size = sum((manifest.root / e[k]).stat().st_size for e in entries for k in ("image", "label"))
    monkeypatch.setattr(data_module, "available_memory_bytes", lambda: 2.0 * size + 1)
    assert not data_module.use_mmap("auto", manifest, entries)  # fits in half of what is free
    monkeypatch.setattr(data_module, "available_memory_bytes", lambda: 2.0 * size - 1)
    assert data_module.use_mmap("auto", manifest, entries)
    assert not data_module.use_mmap("memory", manifest, entries) and data_module.use_mmap("mmap", manifest, entries)

    from pipeline.training import setup as setup_module

    monkeypatch.setattr(data_module, "available_memory_bytes", lambda: 1.0)  # nothing fits: auto maps every array
    mapped, load = [], setup_module.load_case
    monkeypatch.setattr(setup_module, "load_case", lambda m, e, mmap: mapped.append(mmap) or load(m, e, mmap=mmap))
    weights = []
    for cache in ("memory", "auto"):
        cfg = tiny_train_config(tiny_preprocessed, tmp_path / cache, train={"cache": cache}, tracking={"enabled": False})
        train_model(cfg)
        weights.append(torch.load(tmp_path / cache / "model" / "model.pt", weights_only=True))
    half = len(mapped) // 2
    assert half > 0 and mapped == [False] * half + [True] * half
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
