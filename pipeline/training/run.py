"""One training run's assembled parts (:class:`TrainingRun`) and what a task must provide (:class:`Task`).

Kept apart from ``setup`` (which builds a run), ``tasks`` (what differs between segmentation and
pretraining) and ``finalize`` (what a finished run writes), so that each of those imports this module
and none imports another in a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pipeline.config import PipelineConfig
from pipeline.inference.sliding import predict_volume
from pipeline.training.checkpoint import unwrap_model
from pipeline.training.data import CaseArrays, Manifest, PatchDataset, load_case
from pipeline.training.distributed import DistContext
from pipeline.training.losses import SegmentationLoss
from pipeline.training.transfer import TransferReport


class Task(Protocol):
    """What the engine's loop asks of a task (segmentation, reconstruction)."""

    score_key: str  # the validation metric that selects the best weights
    needs_labels: bool

    def batch_loss(self, run: TrainingRun, batch: dict) -> torch.Tensor: ...

    def validate(self, run: TrainingRun) -> dict: ...

    def finish(self, run: TrainingRun, state, tracker, kept_epoch: int) -> dict: ...


@dataclass
class TrainingRun:
    """The assembled components of one training run."""

    cfg: PipelineConfig
    ctx: DistContext
    device: torch.device
    manifest: Manifest
    train_cases: list[CaseArrays]
    val_entries: list[dict]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: SegmentationLoss | None
    loader: DataLoader
    dataset: PatchDataset
    in_channels: int
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    fingerprint: dict[str, str]
    data_fingerprint: str
    task: Task
    transfer: TransferReport | None
    plan_overrides: dict[str, str] = field(default_factory=dict)
    held_out: dict[str, CaseArrays] = field(default_factory=dict)  # validation/test cases, read once per run
    validation_batch: torch.Tensor | None = None  # reconstruction: the fixed held-out patches

    @property
    def bare_model(self) -> nn.Module:
        return unwrap_model(self.model)

    def case(self, entry: dict) -> CaseArrays:
        """A held-out case's arrays, read from disk once per run (validation repeats every few epochs)."""
        if entry["case_id"] not in self.held_out:
            self.held_out[entry["case_id"]] = load_case(self.manifest, entry)
        return self.held_out[entry["case_id"]]

    def predict(self, image: np.ndarray) -> torch.Tensor:
        """Class probabilities (K, x, y, z) of one preprocessed image with the current network (sliding window)."""
        tensor = torch.as_tensor(image, dtype=torch.float32).to(self.device)
        t = self.cfg.train
        return predict_volume(
            self.bare_model,
            tensor,
            t.patch_size,
            self.cfg.model.context_slices,
            t.val_overlap,
            autocast_dtype=self.amp_dtype,
            slice_axis=self.cfg.model.slice_axis,
        )
