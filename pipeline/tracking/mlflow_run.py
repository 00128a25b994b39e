"""MLflow tracking for training and evaluation stages.

The tracking URI is always explicit and absolute (default ``sqlite:///<cwd>/mlflow.db``) and the
experiment gets an explicit absolute artifact location, so runs land in the same store when DVC
runs a stage in a temporary copy of the repository (``dvc exp run``). ``mlflow.db`` and the
artifact folder stay outside DVC's outputs (DVC deletes outputs before running a stage).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from pipeline.config import TrackingSettings


def tracking_uri(settings: TrackingSettings) -> str:
    """The configured URI, or ``sqlite:///`` + the absolute path of ``./mlflow.db``."""
    return settings.tracking_uri or f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


SOURCE_PATHS = ("pipeline", "configs", "dvc.yaml", "pyproject.toml")


def git_commit() -> str:
    """``HEAD`` of the repository in the working directory, or ``unknown``.

    ``+dirty`` is appended when code or configuration (``SOURCE_PATHS``) differs from ``HEAD``. Stage
    outputs are not considered: DVC deletes git-tracked metrics files before it runs their stage.
    """
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty.strip() else "")


def run_tags(stage: str, data_fingerprint: str) -> dict[str, str]:
    """Tags every run carries: git commit, DVC stage, DVC experiment name, data fingerprint."""
    return {
        "git_commit": git_commit(),
        "dvc_stage": stage,
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "data_fingerprint": data_fingerprint,
    }


class RunTracker:
    """One MLflow run; every method is a no-op when tracking is disabled (or on non-main DDP ranks)."""

    def __init__(self, settings: TrackingSettings, active: bool = True) -> None:
        self.settings, self.active, self.run_id = settings, active and settings.enabled, None
        self._mlflow = None

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str], run_id: str | None = None) -> str | None:
        """Start (or, with ``run_id``, reopen) the run; log params and tags. Returns the run id."""
        if not self.active:
            return None
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri(self.settings))
        experiment = mlflow.get_experiment_by_name(self.settings.experiment)
        if experiment is None:
            location = Path(self.settings.artifact_root).resolve().as_uri()
            experiment_id = mlflow.create_experiment(self.settings.experiment, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        run = mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=None if run_id else run_name)
        self.run_id = run.info.run_id
        if run_id is None:
            items = sorted(params.items())
            for start in range(0, len(items), 100):
                mlflow.log_params(dict(items[start : start + 100]))
        mlflow.set_tags(tags)
        return self.run_id

    def set_tags(self, tags: dict[str, str]) -> None:
        """Add tags to the open run."""
        if self._mlflow:
            self._mlflow.set_tags(tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self._mlflow:
            self._mlflow.log_metrics({k.replace("/", "_"): float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self._mlflow:
            self._mlflow.log_artifact(str(path), artifact_path=folder)

    def log_model(self, model: Any, in_channels: int, num_classes: int, spatial_dims: int) -> None:
        """Log the network with ``mlflow.pytorch.log_model`` and a signature with free batch/spatial sizes."""
        if not (self._mlflow and self.settings.log_model):
            return
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        free = (-1,) * spatial_dims
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, in_channels, *free), "image")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes, *free), "logits")]),
        )
        requirements = [f"torch=={torch.__version__.split('+')[0]}"]
        mlflow.pytorch.log_model(
            model, name="model", signature=signature, pip_requirements=requirements, serialization_format="pickle"
        )

    def end(self, status: str = "FINISHED") -> None:
        if self._mlflow:
            self._mlflow.end_run(status=status)
            self._mlflow = None
