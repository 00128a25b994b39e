"""Learning-rate schedules as pure functions of the global step (nothing to save on resume)."""

from __future__ import annotations

import math

import torch

from pipeline.config import TrainSettings


def learning_rate(settings: TrainSettings, step: int, total_steps: int) -> float:
    """LR at ``step`` of ``total_steps``: ``poly`` (nnU-Net: lr * (1 - t) ** 0.9), ``cosine`` or ``constant``."""
    progress = min(step / max(total_steps, 1), 1.0)
    if settings.schedule == "poly":
        return settings.lr * (1.0 - progress) ** settings.poly_exponent
    if settings.schedule == "cosine":
        return settings.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return settings.lr


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float, frozen_encoder: bool = False) -> None:
    """Set ``lr`` on every parameter group; 0 on the ``encoder`` group while it is frozen (no update, no decay)."""
    for group in optimizer.param_groups:
        group["lr"] = 0.0 if frozen_encoder and group.get("name") == "encoder" else lr


def build_optimizer(settings: TrainSettings, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum as in nnU-Net; the encoder's parameters form their own group."""
    encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    parameters = [{"params": encoder, "name": "encoder"}, {"params": rest, "name": "rest"}]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=settings.lr, momentum=settings.momentum, nesterov=True, weight_decay=settings.weight_decay
        )
    return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
