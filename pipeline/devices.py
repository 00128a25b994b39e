"""Device and mixed-precision choices shared by training and inference."""

from __future__ import annotations

import torch

from pipeline.errors import ConfigError


def pick_device(requested: str, local_rank: int = 0, key: str = "train.device") -> torch.device:
    """``auto`` -> this rank's GPU when CUDA is available, else CPU; ``cuda`` without a GPU raises.

    Args:
        requested: ``auto``, ``cpu`` or ``cuda``.
        local_rank: GPU index of this process (DDP).
        key: the config key named in the error.

    Raises:
        ConfigError: ``cuda`` was requested and none is available.
    """
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}=cuda but no CUDA device is available (use auto or cpu)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def amp_dtype_for(setting: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on a GPU that supports it, fp16 on older GPUs, off on CPU."""
    if setting == "off" or device.type != "cuda":
        return None
    if setting == "fp16" or (setting == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16
