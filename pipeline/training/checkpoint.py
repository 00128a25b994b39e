"""Training checkpoints: written atomically every epoch, read with ``weights_only=True``.

A checkpoint holds the model, optimizer and AMP-scaler state, torch RNG states, the epoch counter,
the history and best score so far, and the *fingerprint* of every setting that must not change on
resume (network, classes, patch size, loss, augmentation, data). The learning rate is a pure
function of the step, so no scheduler object needs saving. The canonical model file that DVC
tracks is a plain ``state_dict`` (:func:`save_state_dict`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import InvalidInputError, SegPipeError
from pipeline.io_utils import atomic_path

FORMAT_VERSION = 1


class ResumeRefusedError(SegPipeError):
    """The checkpoint was written with settings that differ from the current ones."""


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` via a temporary file + rename (a crash leaves the old file valid), the same bytes for
    the same tensors: torch names the archive's root folder after the file it writes to, so saving to the randomly
    named temporary path made every ``model.pt`` differ from the last one and no ``dvc.lock`` hash reproduced. Through
    a file object the root is torch's fixed ``archive``, and the rest of the file depends on the content only."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
        torch.save(obj, handle)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` (:func:`save_torch`)."""
    save_torch({"format": FORMAT_VERSION, **payload}, path)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no pickled code runs).

    Raises:
        InvalidInputError: missing, truncated, unpicklable-by-policy or foreign file.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise InvalidInputError(path, "checkpoint not found") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types; report them all with the path
        raise InvalidInputError(path, f"cannot load checkpoint safely (weights_only=True): {exc}".splitlines()[0]) from None
    if not isinstance(payload, dict):
        raise InvalidInputError(path, f"not a checkpoint: holds {type(payload).__name__}, expected a dict")
    return payload


def save_state_dict(path: Path, model: torch.nn.Module) -> None:
    """Write the model's ``state_dict`` (CPU tensors) with :func:`save_torch`: the canonical model file."""
    save_torch({k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}, path)


def check_resume_fingerprint(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse to resume when any fingerprinted setting differs (RELIABILITY T4).

    Raises:
        ResumeRefusedError: naming every differing key with its saved and current value.
    """
    keys = sorted(set(saved) | set(current))
    diffs = [
        f"{k}: checkpoint {saved.get(k, '<absent>')} != now {current.get(k, '<absent>')}"
        for k in keys
        if saved.get(k) != current.get(k)
    ]
    if diffs:
        raise ResumeRefusedError(
            f"{path}: refusing to resume, the configuration changed ({len(diffs)} key(s)):\n  "
            + "\n  ".join(diffs)
            + "\nstart a fresh run with train.resume=false or restore the settings"
        )


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Flatten nested settings into ``{"a.b": text}`` (strings as is, others as JSON): fingerprints, MLflow params."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return out
    return {prefix: value if isinstance(value, str) else json.dumps(value, default=str)}


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model
