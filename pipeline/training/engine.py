"""The training loop shared by every model (segmentation and autoencoder pretraining, 2D and 3D, one process or DDP).

``train_model(cfg, stage)`` is what the CLI and DVC call. Per epoch: sample patches, step the
optimizer (AMP on GPU), validate every ``val_every`` epochs with sliding-window inference and
per-class Dice, keep the best weights, write the checkpoint atomically, log to MLflow. Training
runs exactly ``max_epochs`` x ``iterations_per_epoch`` steps (planned by ``segpipe plan``), so the
result depends on seeds and steps, never on the machine's speed. ``max_time_minutes`` is a guard:
when it fires the run fails with a message (resume with ``train.resume=true``) instead of silently
producing a different, shorter-trained model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from pipeline.config import PipelineConfig
from pipeline.errors import SegPipeError
from pipeline.planning.resolve import apply_plan, with_fold_folders
from pipeline.training.checkpoint import check_resume_fingerprint, load_checkpoint, save_checkpoint
from pipeline.training.data import prefetched
from pipeline.training.distributed import all_reduce_sum, barrier, broadcast_flag, shutdown
from pipeline.training.finalize import start_tracking
from pipeline.training.run import TrainingRun
from pipeline.training.schedule import learning_rate, set_learning_rate
from pipeline.training.setup import build_run, checkpoint_paths


class TrainingDivergedError(SegPipeError):
    """The loss became NaN or infinite (RELIABILITY T5)."""


class TimeGuardError(SegPipeError):
    """``train.max_time_minutes`` ran out before the planned steps: no model is written (it would differ)."""


@dataclass
class TrainState:
    """What changes from epoch to epoch (and is restored on resume)."""

    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)
    best_score: float = float("-inf")
    best_epoch: int = 0
    elapsed_s: float = 0.0
    mlflow_run_id: str | None = None


def train_model(cfg: PipelineConfig, stage: str = "train") -> dict:
    """Train ``cfg.model`` on the preprocessed data in ``cfg.preprocess.out_dir``.

    The task follows from the model: segmentation networks learn labels; an ``autoencoder``
    learns to reconstruct images (pretraining) and its encoder is saved for transfer.

    Args:
        cfg: validated configuration (sections model, loss, augment, train, tracking).
        stage: DVC stage name recorded as an MLflow tag.

    Returns:
        The final metrics (also written to ``<train.reports_dir>/metrics.json`` by rank 0).

    Raises:
        InvalidInputError: missing/malformed preprocessed data or checkpoint.
        ResumeRefusedError: ``train.resume`` with a checkpoint from different settings.
        TrainingDivergedError: the loss became NaN/Inf; checkpoints on disk are left untouched.
    """
    cfg, overrides = apply_plan(cfg)
    cfg = with_fold_folders(cfg)
    run = build_run(cfg)
    run.plan_overrides = overrides
    state = restore(run) if cfg.train.resume else TrainState()
    tracker = start_tracking(run, state, stage)
    try:
        fit(run, state, tracker)
        barrier(run.ctx)  # rank 0 has written best.pt before any rank reads it
        kept_epoch = load_best_weights(run) if cfg.train.weights == "best" else state.epoch
        metrics = run.task.finish(run, state, tracker, kept_epoch)
    except BaseException:
        tracker.end("FAILED")
        shutdown(run.ctx)
        raise
    tracker.end()
    shutdown(run.ctx)
    return metrics


def restore(run: TrainingRun) -> TrainState:
    """Load ``last.pt`` into the run (model, optimizer, scaler, RNG) if it exists; refuse changed settings."""
    last, _ = checkpoint_paths(run.cfg)
    if not last.exists():
        return TrainState()
    payload = load_checkpoint(last, map_location=run.device)
    check_resume_fingerprint(payload["fingerprint"], run.fingerprint, last)
    run.bare_model.load_state_dict(payload["model"])
    run.optimizer.load_state_dict(payload["optimizer"])
    if run.scaler is not None and payload.get("scaler"):
        run.scaler.load_state_dict(payload["scaler"])
    torch.set_rng_state(payload["rng"]["torch"].cpu())
    if payload["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in payload["rng"]["cuda"]])
    return TrainState(
        payload["epoch"],
        payload["history"],
        payload["best_score"],
        payload["best_epoch"],
        payload["elapsed_s"],
        payload.get("mlflow_run_id"),
    )


def fit(run: TrainingRun, state: TrainState, tracker) -> None:
    """Run epochs from ``state.epoch`` until ``max_epochs`` or the time budget is spent."""
    t = run.cfg.train
    while state.epoch < t.max_epochs:
        started = time.perf_counter()
        record = {"epoch": state.epoch + 1, **train_epoch(run, state.epoch)}
        spent = state.elapsed_s + time.perf_counter() - started
        out_of_time = broadcast_flag(spent >= t.max_time_minutes * 60, run.ctx)
        last_epoch = state.epoch + 1 == t.max_epochs or out_of_time
        if (state.epoch + 1) % t.val_every == 0 or last_epoch:
            record.update(run.task.validate(run))
        record["epoch_time_s"] = time.perf_counter() - started
        state.elapsed_s += record["epoch_time_s"]
        state.epoch += 1
        state.history.append(record)
        if run.ctx.is_main:
            _save_epoch(run, state, record)
            tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=state.epoch)
        if out_of_time and state.epoch < t.max_epochs:
            raise TimeGuardError(
                f"train.max_time_minutes={t.max_time_minutes} ran out after epoch {state.epoch} of {t.max_epochs} "
                f"({state.elapsed_s / 60:.1f} min): no model written, because a shorter run gives a different model. "
                f"Continue with train.resume=true (and a larger train.max_time_minutes), or plan with a smaller profile"
            )
        if last_epoch:
            break


def train_epoch(run: TrainingRun, epoch: int) -> dict:
    """One pass over ``iterations_per_epoch`` batches; returns mean loss, final LR and throughput."""
    t = run.cfg.train
    run.model.train()
    run.dataset.set_epoch(epoch)
    if hasattr(run.loader.sampler, "set_epoch"):
        run.loader.sampler.set_epoch(epoch)
    total_steps = t.max_epochs * t.iterations_per_epoch
    loss_sum, samples, started = torch.zeros(2, dtype=torch.float64), 0, time.perf_counter()
    frozen = epoch < t.freeze_encoder_epochs
    for step, batch in enumerate(prefetched(run.loader, t.prefetch_batches)):
        lr = learning_rate(t, epoch * t.iterations_per_epoch + step, total_steps)
        set_learning_rate(run.optimizer, lr, frozen_encoder=frozen)
        loss, bad_gradient = train_step(run, batch)
        if broadcast_flag(not torch.isfinite(loss).item() or bad_gradient is not None, run.ctx):
            last, best = checkpoint_paths(run.cfg)
            what = f"loss became {loss.item()}" if not torch.isfinite(loss) else f"gradient of {bad_gradient} became NaN/Inf"
            raise TrainingDivergedError(
                f"{what} at epoch {epoch + 1}, step {step + 1}: training stopped before the update; "
                f"the last good checkpoint ({last}) and the best model ({best}) are untouched"
            )
        loss_sum += torch.tensor([loss.item(), 1.0], dtype=torch.float64)
        samples += batch["image"].shape[0]
    all_reduce_sum(loss_sum, run.ctx)
    seconds = time.perf_counter() - started
    voxels = samples * run.ctx.world_size * int(torch.tensor(t.patch_size).prod())
    return {
        "train_loss": (loss_sum[0] / loss_sum[1]).item(),
        "lr": lr,
        "train_time_s": seconds,
        "samples": samples * run.ctx.world_size,
        "samples_per_s": samples * run.ctx.world_size / seconds,
        "voxels_per_s": voxels / seconds,
    }


def train_step(run: TrainingRun, batch: dict) -> tuple[torch.Tensor, str | None]:
    """Forward, backward and optimizer step for one batch.

    Returns:
        (the loss, the name of the first parameter whose gradient is not finite, or ``None``). The update is
        skipped when the loss or a gradient is not finite (with AMP's loss scaler, a non-finite gradient is the
        scaler's normal signal to lower its scale: the scaler skips that step itself and training goes on).
    """
    memory_format = _memory_format(run)
    batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}
    batch["image"] = batch["image"].contiguous(memory_format=memory_format)
    run.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(run.device.type, dtype=run.amp_dtype or torch.float32, enabled=run.amp_dtype is not None):
        loss = run.task.batch_loss(run, batch)
    if not torch.isfinite(loss):
        return loss.detach(), None
    scaled = run.scaler.scale(loss) if run.scaler else loss
    scaled.backward()
    if run.scaler:
        run.scaler.unscale_(run.optimizer)
        if run.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        return loss.detach(), None
    bad = first_nonfinite_gradient(run.bare_model)
    if bad is not None:
        return loss.detach(), bad
    if run.cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip)
    run.optimizer.step()
    return loss.detach(), None


def first_nonfinite_gradient(model: torch.nn.Module) -> str | None:
    """Name of the first parameter whose gradient holds NaN/Inf (one fused check over all gradients first)."""
    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not named or torch.isfinite(torch.stack([g.float().abs().sum() for _, g in named])).all():
        return None
    return next(name for name, grad in named if not torch.isfinite(grad).all())


def _memory_format(run: TrainingRun) -> torch.memory_format:
    if not (run.cfg.train.channels_last and run.device.type == "cuda"):
        return torch.contiguous_format
    return torch.channels_last if run.cfg.model.spatial_dims == 2 else torch.channels_last_3d


def _save_epoch(run: TrainingRun, state: TrainState, record: dict) -> None:
    """Write ``last.pt`` (and ``best.pt`` when the validation score improved), atomically."""
    last, best = checkpoint_paths(run.cfg)
    score = record.get(run.task.score_key)
    if score is not None and score > state.best_score:
        state.best_score, state.best_epoch = score, state.epoch
        save_checkpoint(best, {"model": run.bare_model.state_dict(), "epoch": state.epoch, "score": score})
    payload = {
        "model": run.bare_model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler else None,
        "rng": {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "epoch": state.epoch,
        "history": state.history,
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "elapsed_s": state.elapsed_s,
        "mlflow_run_id": state.mlflow_run_id,
        "fingerprint": run.fingerprint,
    }
    save_checkpoint(last, payload)


def load_best_weights(run: TrainingRun) -> int:
    """Put the best validated weights into the model; return their epoch."""
    _, best = checkpoint_paths(run.cfg)
    payload = load_checkpoint(best, map_location=run.device)
    run.bare_model.load_state_dict(payload["model"])
    return int(payload["epoch"])
