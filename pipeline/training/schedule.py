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


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set ``lr`` on every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def build_optimizer(settings: TrainSettings, parameters) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum as in nnU-Net."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=settings.lr, momentum=settings.momentum, nesterov=True, weight_decay=settings.weight_decay
        )
    return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
