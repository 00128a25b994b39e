"""Encoder transfer: save an (auto)encoder's ``encoder.*`` weights, load them into a segmentation network.

Keys match by name because autoencoders and segmentation networks of equal config share the same
encoder module. A load is all-or-nothing by default: every ``encoder.*`` tensor of the target must
come from the file with the same shape, and the file must hold nothing else; otherwise the error
lists the missing, unexpected and shape-mismatched keys (``train.init_strict=false`` loads what
matches and reports the rest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import InvalidInputError
from pipeline.training.checkpoint import load_checkpoint, save_torch, unwrap_model

PREFIX = "encoder."


@dataclass
class TransferReport:
    """What an encoder load did."""

    source: Path
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        text = f"loaded {len(self.loaded)} encoder tensor(s)"
        for name in ("missing", "unexpected", "mismatched"):
            keys = getattr(self, name)
            if keys:
                text += f"; {len(keys)} {name}: {', '.join(keys[:12])}{' ...' if len(keys) > 12 else ''}"
        return text


def encoder_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The ``encoder.*`` entries of a model's state_dict (CPU copies)."""
    return {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items() if k.startswith(PREFIX)}


def save_encoder(path: Path, model: nn.Module) -> None:
    """Write the encoder weights (a plain state_dict with ``encoder.*`` keys) atomically.

    Raises:
        ValueError: the model has no ``encoder`` submodule.
    """
    state = encoder_state(model)
    if not state:
        raise ValueError(f"{type(model).__name__} has no 'encoder' submodule to save")
    save_torch(state, path)


def load_encoder(model: nn.Module, path: Path, strict: bool = True) -> TransferReport:
    """Copy encoder weights from ``path`` into ``model`` (matched by key, shapes checked).

    Raises:
        InvalidInputError: unreadable file, or (``strict``) any missing, unexpected or mismatched key;
            nothing is loaded in that case.
    """
    path = Path(path)
    source = load_checkpoint(path)
    bare = unwrap_model(model)
    target = {k: v for k, v in bare.state_dict().items() if k.startswith(PREFIX)}
    report = TransferReport(path)
    report.unexpected = sorted(k for k in source if k not in target)
    report.missing = sorted(k for k in target if k not in source)
    report.mismatched = sorted(
        f"{k} (file {tuple(source[k].shape)} vs model {tuple(target[k].shape)})"
        for k in target
        if k in source and tuple(source[k].shape) != tuple(target[k].shape)
    )
    if strict and not report.complete:
        raise InvalidInputError(path, "encoder weights do not fit this network (train.init_strict=true): " + report.summary())
    loadable = {k: source[k] for k in target if k in source and tuple(source[k].shape) == tuple(target[k].shape)}
    bare.load_state_dict(loadable, strict=False)
    report.loaded = sorted(loadable)
    return report
