"""Start of run (MLflow run, params, tags) and end of run (canonical model, model card, metrics, figures)."""

from __future__ import annotations

import logging
import platform
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline.data.labels import LabelRegistry
from pipeline.evaluation.figures import (
    save_natural_overlay,
    save_overlay,
    save_reconstruction_grid,
    save_training_curves,
)
from pipeline.inference.onnx_backend import ONNX_FILE, export_onnx
from pipeline.io_utils import atomic_path, write_json_atomic
from pipeline.modelcard import ModelCard, PlannedConfiguration, TrainingEnvelope, write_model_card
from pipeline.tracking.mlflow_run import RunTracker, run_tags, source_commit
from pipeline.training.checkpoint import flatten, save_state_dict
from pipeline.training.run import TrainingRun
from pipeline.training.transfer import save_encoder

TRACKED_SECTIONS = ("base", "plan", "preprocess", "model", "loss", "augment", "train")
# What a clock measured, in the training history and the run summary. It never goes into a DVC output (the outputs
# hold what the inputs, seeds and steps decide, so a rerun reproduces dvc.lock to the byte): write_reports puts it in
# ``timings.json`` beside ``metrics.json``, which DVC does not track and git ignores, and MLflow logs it.
TIMING_KEYS = frozenset({"train_minutes", "samples_per_s", "train_time_s", "epoch_time_s", "voxels_per_s"})
TIMINGS_FILE = "timings.json"
NATURAL_MODALITIES = ["red", "green", "blue"]  # what pipeline/preprocess/natural.py writes

logger = logging.getLogger(__name__)


def start_tracking(run: TrainingRun, state, stage: str) -> RunTracker:
    """Open the MLflow run (rank 0 only; reopened on resume) with flattened config params and tags."""
    tracker = RunTracker(run.cfg.tracking, active=run.ctx.is_main)
    dumped = run.cfg.model_dump(mode="json")
    params = flatten("", {name: dumped[name] for name in TRACKED_SECTIONS})
    params.update({"in_channels": str(run.in_channels), "world_size": str(run.ctx.world_size), "device": run.device.type})
    tags = {**run_tags(stage, run.data_fingerprint), "model": run.cfg.model.name}
    if run.transfer is not None:
        tags.update(init_from=str(run.transfer.source), init_loaded_tensors=str(len(run.transfer.loaded)))
    if run.cfg.plan.configuration:
        tags.update(plan_configuration=run.cfg.plan.configuration, plan_overrides=str(run.plan_overrides or "none"))
    state.mlflow_run_id = tracker.start(f"{stage}-{run.cfg.model.name}", params, tags, run_id=state.mlflow_run_id)
    if run.cfg.plan.configuration and Path(run.cfg.plan.file).is_file():
        tracker.log_artifact(Path(run.cfg.plan.file))
    return tracker


def finalize(run: TrainingRun, state, tracker: RunTracker, kept_epoch: int, test: dict, postprocessing=None) -> dict:
    """Write the canonical model, model card (with the postprocessing decision), metrics, history and figures; log
    them to MLflow."""
    t = run.cfg.train
    out_dir, reports = Path(t.out_dir), Path(t.reports_dir)
    kept = next(h for h in state.history if h["epoch"] == kept_epoch)
    metrics = {
        **run_summary(run.cfg.model.name, state, kept_epoch, run.cfg.train.weights),
        **{k: v for k, v in kept.items() if k.startswith(("val_dice_", "val_miou", "val_pixel_accuracy"))},
        **test,
    }
    save_state_dict(out_dir / "model.pt", run.bare_model)
    _export_onnx(run, out_dir / ONNX_FILE)
    decision = postprocessing.to_json() if postprocessing is not None else None
    if decision is not None:
        tracker.set_tags({"postprocessing": str(decision)})
    write_model_card(model_card(run, metrics, postprocessing=decision), out_dir / "model_card.json")
    write_reports(reports, metrics, state.history)
    write_plot_files(state.history, reports / "plots", dice_keys(state.history))
    figures = write_figures(run, state.history, reports / "details")
    tracker.log_metrics({k: v for k, v in metrics.items() if k.startswith("test_")}, step=state.epoch)
    with atomic_path(reports / "details" / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(run.cfg.model_dump(mode="json"), sort_keys=False))
    for path in [
        reports / "details" / "config.yaml",
        reports / "metrics.json",
        reports / TIMINGS_FILE,
        out_dir / "model_card.json",
        out_dir / "model.pt",
    ]:
        tracker.log_artifact(path)
    for path in figures:
        tracker.log_artifact(path, "figures")
    tracker.log_model(run.bare_model.cpu().eval(), run.in_channels, run.manifest.num_classes, run.cfg.train.patch_size)
    return metrics


def _export_onnx(run: TrainingRun, path: Path) -> None:
    """``model.onnx`` beside ``model.pt`` for ``infer.backend=onnx`` (medical U-Net and V-Net; batch and spatial axes
    free in multiples of the network's stride). A network the exporter cannot take is logged, not fatal: the PyTorch
    backend still serves it."""
    divisor = getattr(run.cfg.model, "divisor", None)
    if run.cfg.model.name not in ("unet2d", "vnet3d") or divisor is None:
        return
    strides = divisor if isinstance(divisor, tuple) else (divisor,) * len(run.cfg.train.patch_size)
    device = next(run.bare_model.parameters()).device
    try:
        export_onnx(run.bare_model, run.in_channels, tuple(run.cfg.train.patch_size), strides, path)
    except Exception as exc:  # the exporter raises many types; the canonical model.pt is already written
        logger.warning("ONNX export of %s failed (%s: %s); infer.backend=onnx is unavailable for it", path.parent,
                       type(exc).__name__, exc)  # fmt: skip
    finally:
        run.bare_model.to(device)


def run_summary(model: str, state, kept_epoch: int, weights: str) -> dict:
    """Fields every training stage's ``metrics.json`` starts with: which weights were kept (``train.weights``) and
    from which epoch, and the best validated epoch (the same with ``best``)."""
    return {
        "model": model,
        "weights": weights,
        "kept_epoch": kept_epoch,
        "best_epoch": state.best_epoch,
        "epochs": state.epoch,
        "train_minutes": round(state.elapsed_s / 60, 3),
        "samples_per_s": float(np.mean([h["samples_per_s"] for h in state.history])),
    }


def write_reports(reports: Path, metrics: dict, history: list[dict]) -> None:
    """``metrics.json`` and ``details/history.json`` without the clock's figures, and those figures (the run's and each
    epoch's) in ``timings.json`` (``TIMING_KEYS``); every training task ends here."""
    run_record, run_timings = split_timings(metrics)
    epochs = [split_timings(h) for h in history]
    write_json_atomic(reports / "metrics.json", run_record)
    write_json_atomic(reports / "details" / "history.json", [record for record, _ in epochs])
    epoch_timings = [{"epoch": record["epoch"], **timings} for record, timings in epochs]
    write_json_atomic(reports / TIMINGS_FILE, {**run_timings, "epochs": epoch_timings})


def split_timings(record: dict) -> tuple[dict, dict]:
    """``(record without what a clock measured, those figures)``: the keys in ``TIMING_KEYS`` go to the second."""
    return {k: v for k, v in record.items() if k not in TIMING_KEYS}, {k: v for k, v in record.items() if k in TIMING_KEYS}


def write_plot_files(
    history: list[dict], folder: Path, validation_keys: tuple[str, ...], train_keys: tuple[str, ...] = ("train_loss", "lr")
) -> None:
    """Per-epoch series for ``dvc plots``: ``train.json`` (``epoch`` and ``train_keys`` of every epoch) and
    ``validation.json`` (``epoch`` and ``validation_keys`` of the epochs that have the first of them). Every record of
    a file has the same keys: ``dvc plots`` cannot draw records with missing fields."""
    write_json_atomic(folder / "train.json", [{k: h[k] for k in ("epoch", *train_keys)} for h in history])
    validated = [{k: h[k] for k in ("epoch", *validation_keys)} for h in history if validation_keys[0] in h]
    write_json_atomic(folder / "validation.json", validated)


def dice_keys(history: list[dict]) -> tuple[str, ...]:
    """The ``val_dice_*`` keys of the first validated epoch, in its order (mean first)."""
    first = next((h for h in history if "val_dice_mean" in h), {"val_dice_mean": None})
    return tuple(k for k in first if k.startswith("val_dice_"))


def model_card(run: TrainingRun, metrics: dict, **extra) -> ModelCard:
    """What inference needs to rebuild and apply the network, plus provenance and intended use; which weights were
    kept, and from which epoch, come from the run's ``metrics`` (:func:`run_summary`)."""
    import monai

    return ModelCard(
        model=run.cfg.model,
        in_channels=run.in_channels,
        num_classes=run.manifest.num_classes,
        labels={str(k): v for k, v in run.manifest.labels.items()},
        modalities=tuple(run.manifest.modalities),
        patch_size=tuple(run.cfg.train.patch_size),
        context_slices=run.cfg.model.context_slices,
        slice_axis=run.cfg.model.slice_axis,
        target_spacing=tuple(run.manifest.target_spacing),
        preprocess=run.cfg.preprocess.model_copy(update={"spacing_mm": tuple(run.manifest.target_spacing)}),
        intensity=_intensity_statistics(run.manifest.root),
        plan=_planned_configuration(run),
        envelope=_training_envelope(run),
        plan_overrides=run.plan_overrides,
        preprocess_config_digest=run.manifest.config_digest,
        data_fingerprint=run.data_fingerprint,
        weights=metrics["weights"],
        kept_epoch=metrics["kept_epoch"],
        best_epoch=metrics["best_epoch"],
        metrics={k: v for k, v in metrics.items() if any(m in k for m in ("dice", "miou", "pixel_accuracy", "mse", "_ap"))},
        versions={"torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version()},
        git_commit=source_commit(),
        **extra,
    )


def _planned_configuration(run: TrainingRun) -> PlannedConfiguration | None:
    """The plan configuration this model was trained with (``None`` without a plan)."""
    if not run.cfg.plan.configuration:
        return None
    from pipeline.planning.plans import read_plans

    plans = read_plans(run.cfg.plan.file)
    return PlannedConfiguration(
        configuration=plans.configuration(run.cfg.plan.configuration), profile=plans.profile, normalisation=plans.normalisation
    )


def _training_envelope(run: TrainingRun) -> TrainingEnvelope | None:
    """The input gate's envelope, from the plan's fingerprint of the training scans (``None`` without one)."""
    import json

    path = Path(run.cfg.plan.file).parent / "fingerprint.json"
    if not run.cfg.plan.configuration or not path.is_file():
        return None
    return TrainingEnvelope.from_fingerprint(json.loads(path.read_text()))


def _intensity_statistics(preprocessed_root: Path) -> dict | None:
    """The CT intensity statistics preprocessing used (``None`` for MR), so inference normalises new scans identically."""
    import json

    return json.loads((Path(preprocessed_root) / "fingerprint.json").read_text()).get("intensity")


def write_figures(run: TrainingRun, history: list[dict], folder: Path) -> list[Path]:
    """Training curves plus one overlay per validation case (axial slice with the most foreground)."""
    paths = [folder / "curves.png"]
    save_training_curves(paths[0], history)
    registry = LabelRegistry.from_mapping(run.manifest.labels)
    run.model.eval()
    for entry in run.val_entries[: run.cfg.train.overlay_cases]:
        case = run.case(entry)
        prediction = run.predict(case.image).argmax(0).cpu().numpy()
        z = int((case.label > 0).sum(axis=(0, 1)).argmax())
        path = folder / f"overlay_{case.case_id}.png"
        if run.manifest.modalities == NATURAL_MODALITIES:  # photographs: RGB, shown as they are, not radiologically
            save_natural_overlay(path, case.image[:, :, :, 0], case.label[:, :, 0], prediction[:, :, 0], registry, case.case_id)
        else:
            title = f"{case.case_id} (axial slice {z})"
            save_overlay(path, case.image[0, :, :, z], case.label[:, :, z], prediction[:, :, z], registry, title)
        paths.append(path)
    return paths


def finalize_pretraining(run: TrainingRun, state, tracker: RunTracker, kept_epoch: int) -> dict:
    """Write the encoder weights (the DVC output that segmentation starts from), the whole autoencoder,
    a card, metrics, plots and the reconstruction grid; log them to MLflow."""

    t = run.cfg.train
    out_dir, reports = Path(t.out_dir), Path(t.reports_dir)
    kept = next(h for h in state.history if h["epoch"] == kept_epoch)
    metrics = {
        **run_summary(f"autoencoder/{run.cfg.model.variant}/{run.cfg.model.encoder}", state, kept_epoch, t.weights),
        "pretraining_cases": len(run.train_cases),
        "val_reconstruction_mse": kept["val_reconstruction_mse"],
    }
    save_encoder(out_dir / "encoder.pt", run.bare_model)
    save_state_dict(out_dir / "autoencoder.pt", run.bare_model)
    transfer = f"encoder.pt loads into a model.name={run.cfg.model.encoder} network with the same topology (train.init_from)"
    write_model_card(model_card(run, metrics, transfer=transfer), out_dir / "model_card.json")
    write_reports(reports, metrics, state.history)
    write_plot_files(state.history, reports / "plots", ("val_reconstruction_mse",), train_keys=("train_loss",))
    grid = reports / "details" / "reconstructions.png"
    write_reconstruction_grid(run, grid)
    save_training_curves(reports / "details" / "curves.png", state.history)
    for path in [reports / "metrics.json", reports / TIMINGS_FILE, out_dir / "model_card.json", out_dir / "encoder.pt"]:
        tracker.log_artifact(path)
    for path in [grid, reports / "details" / "curves.png"]:
        tracker.log_artifact(path, "figures")
    return metrics


def write_reconstruction_grid(run: TrainingRun, path: Path, count: int = 6) -> None:
    """Centre slices of held-out patches, their reconstructions and (VAE) samples from the prior."""
    model = run.bare_model.eval()
    patches = run.task.validation_batch(run)[:count].to(run.device)
    with torch.no_grad():
        recon = model(patches)["reconstruction"].float().cpu().numpy()
        samples = (
            model.sample(count, tuple(run.cfg.train.patch_size)).float().cpu().numpy() if model.variant == "variational" else None
        )
    centre = run.cfg.model.context_slices  # 2.5D: the centre slice's channel

    def slices(batch: np.ndarray) -> np.ndarray:
        return batch[:, centre] if batch.ndim == 4 else batch[:, 0, :, :, batch.shape[-1] // 2]

    save_reconstruction_grid(path, slices(patches.cpu().numpy()), slices(recon), None if samples is None else slices(samples))
