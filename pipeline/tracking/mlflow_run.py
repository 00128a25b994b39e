"""MLflow tracking for training and evaluation stages.

The tracking URI is always explicit and absolute (default ``sqlite:///<cwd>/mlflow.db``) and the
experiment gets an explicit absolute artifact location, so runs land in the same store when DVC
runs a stage in a temporary copy of the repository (``dvc exp run``). ``mlflow.db`` and the
artifact folder stay outside DVC's outputs (DVC deletes outputs before running a stage).
"""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import warnings
from pathlib import Path
from typing import Any

from pipeline.config import TrackingSettings

NOT_IN_METRIC_NAMES = re.compile(r"[^\w\-. :]")  # MLflow takes letters, digits, _ - . space : and / (which we replace)


def metric_key(name: str) -> str:
    """The MLflow name of one of our metric keys: every character MLflow refuses and ``/`` become ``_``. Keys carry
    label names from ``dataset.json`` (``dice_kidney (left)``), on which MLflow would raise and fail the stage."""
    return NOT_IN_METRIC_NAMES.sub("_", name)


def tracking_uri(settings: TrackingSettings) -> str:
    """The configured URI, or ``sqlite:///`` + the absolute path of ``./mlflow.db``."""
    return settings.tracking_uri or f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


SOURCE_PATHS = ("pipeline", "configs", "dvc.yaml", "pyproject.toml")


def git_commit() -> str:
    """``HEAD`` of the repository in the working directory, or ``unknown``; MLflow runs are tagged with it.

    ``+dirty`` is appended when code or configuration (``SOURCE_PATHS``) differs from ``HEAD``. Stage
    outputs are not considered: DVC deletes git-tracked metrics files before it runs their stage.
    """
    return _commit(["git", "rev-parse", "HEAD"])


def source_commit() -> str:
    """The last commit that changed code or configuration (``SOURCE_PATHS``), ``+dirty`` as in :func:`git_commit`.

    Model cards record this one: a rerun at a later commit that changed no code (the commit of ``dvc.lock`` and
    the metrics, say) writes the same card, so the model folder's hash in ``dvc.lock`` reproduces.
    """
    return _commit(["git", "log", "-1", "--format=%H", "--", *SOURCE_PATHS])


def _commit(command: list[str]) -> str:
    try:
        found = subprocess.run(command, capture_output=True, text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (found or "unknown") + ("+dirty" if dirty.strip() else "")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (the first ``model name`` line of ``cpuinfo``), else :func:`platform.processor`, else
    ``unknown``."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_tags() -> dict[str, str]:
    """What, besides seeds and steps, decides a CPU run's bits: the CPU model (oneDNN's convolution kernels block by
    the CPU they run on, so two AVX-512 CPUs of different models train different weights, measured), the instruction
    set PyTorch dispatches to, the torch thread count and the torch version. Two runs whose metrics differ with the
    same commit and data can be told apart by these."""
    import torch

    return {
        "segpipe_cpu": cpu_model(),
        "segpipe_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "segpipe_torch_threads": str(torch.get_num_threads()),
        "segpipe_torch_version": torch.__version__,
    }


def run_tags(stage: str, data_fingerprint: str) -> dict[str, str]:
    """Tags every run carries: git commit, DVC stage, DVC experiment name, data fingerprint, the owning process and
    the machine (:func:`machine_tags`)."""
    return {
        "git_commit": git_commit(),
        "dvc_stage": stage,
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "data_fingerprint": data_fingerprint,
        "segpipe_host": socket.gethostname(),
        "segpipe_pid": str(os.getpid()),
        **machine_tags(),
    }


def close_stale_runs(client, experiment_id: str, stage: str, keep: str | None = None) -> list[str]:
    """Row P1: mark RUNNING runs of ``stage`` whose process is gone (killed, e.g. by SIGKILL) as KILLED.

    A run is stale when it was started on this host by a process that no longer exists (runs from other
    hosts, or from live processes such as a parallel ``dvc exp run``, are left alone). Returns the closed run ids.
    """
    stale = []
    query = f"tags.dvc_stage = '{stage}' and attributes.status = 'RUNNING'"
    for run in client.search_runs([experiment_id], filter_string=query):
        tags = run.data.tags
        if run.info.run_id == keep or tags.get("segpipe_host", socket.gethostname()) != socket.gethostname():
            continue
        if _process_alive(tags.get("segpipe_pid")):
            continue
        client.set_tag(run.info.run_id, "segpipe_closed", f"process {tags.get('segpipe_pid', '?')} had gone; closed as KILLED")
        client.set_terminated(run.info.run_id, status="KILLED")
        stale.append(run.info.run_id)
    return stale


def _process_alive(pid: str | None) -> bool:
    """Whether the process that owns a run still runs (a run without an owner tag counts as gone)."""
    if not pid or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_a_zombie(int(pid))


def _not_a_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


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
        if "dvc_stage" in tags:
            close_stale_runs(mlflow.MlflowClient(), experiment_id, tags["dvc_stage"], keep=run_id)
        run = mlflow.start_run(  # tags at creation: a run is never seen without its owner (pid, host)
            run_id=run_id, experiment_id=experiment_id, run_name=None if run_id else run_name, tags=None if run_id else tags
        )
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
        """Log ``metrics`` at ``step`` under :func:`metric_key` names."""
        if self._mlflow:
            self._mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if self._mlflow:
            self._mlflow.log_artifact(str(path), artifact_path=folder)

    def log_model(self, model: Any, in_channels: int, num_classes: int, patch_size: tuple[int, ...]) -> None:
        """Log the network as an MLflow model: a ``torch.export`` program (``pt2``, no pickle) by default.

        The exported program takes windows of the training ``patch_size`` with any batch size (what a sliding
        window feeds it); ``tracking.model_format: pickle`` logs the pickled module instead (opt-in).
        """
        if not (self._mlflow and self.settings.log_model):
            return
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        window = tuple(int(p) for p in patch_size)
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, in_channels, *window), "image")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes, *window), "logits")]),
        )
        requirements = [f"torch=={torch.__version__.split('+')[0]}"]
        fmt = self.settings.model_format
        example = np.zeros((2, in_channels, *window), np.float32) if fmt == "pt2" else None  # batch 2: batch stays free
        mlflow.pytorch.log_model(
            model, name="model", signature=signature, pip_requirements=requirements, serialization_format=fmt,
            input_example=example, validate_serving_input=False,  # a tensor example: MLflow's JSON check cannot take it
        )  # fmt: skip

    def log_pyfunc(self, name: str, code: Path, artifacts: dict[str, str], signature) -> None:
        """Log an MLflow pyfunc model from a code file (no pickle) with ``artifacts``."""
        if not (self._mlflow and self.settings.log_model):
            return
        import mlflow.pyfunc

        with warnings.catch_warnings():  # its input is a scan's path: an example would name a file only this machine has
            warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
            mlflow.pyfunc.log_model(
                name=name, python_model=str(code), artifacts=artifacts, signature=signature, pip_requirements=["mlflow"]
            )

    def end(self, status: str = "FINISHED") -> None:
        if self._mlflow:
            self._mlflow.end_run(status=status)
            self._mlflow = None
