"""GPU paths (issue 15, item 6): autocast in bf16 and fp16, channels-last, and windows on the GPU stitched on the CPU.

Marked ``gpu`` and skipped without CUDA (CI never has one). Run on a lent GPU with ``pytest -m gpu tests/gpu``. Each test
compares the GPU path with the float32 CPU result of the same weights, so a wrong cast, layout or device shows as a
number, not a crash.
"""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.inference.sliding import predict_volume
from pipeline.models.vnet3d import VNet3d
from pipeline.training.engine import train_model
from tests.conftest import tiny_train_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _network() -> VNet3d:
    torch.manual_seed(0)
    return VNet3d(1, 3, (8, 16, 32), (1, 2, 2), 3, "instance").eval()


def _volume() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 48, 40, 24)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_autocast_probabilities_match_float32_on_the_cpu(dtype, tolerance):
    network, volume = _network(), _volume()
    with torch.no_grad():
        reference = predict_volume(network, volume, (32, 32, 16))
        mixed = predict_volume(network.cuda(), volume.cuda(), (32, 32, 16), autocast_dtype=dtype)
    assert mixed.dtype == torch.float32 and mixed.device.type == "cuda"  # blended in float32 whatever the autocast
    assert (mixed.cpu() - reference).abs().max() < tolerance
    assert (mixed.cpu().argmax(0) == reference.argmax(0)).float().mean() > 0.99


def test_channels_last_gives_the_same_logits():
    network, volume = _network().cuda(), _volume()[None].cuda()
    with torch.no_grad():
        plain = network(volume)
        network = network.to(memory_format=torch.channels_last_3d)
        last = network(volume.contiguous(memory_format=torch.channels_last_3d))
    assert torch.allclose(plain, last, atol=1e-4)


def test_windows_on_the_gpu_stitched_on_the_cpu_equal_the_cpu_result():
    network, volume = _network(), _volume()
    with torch.no_grad():
        reference = predict_volume(network, volume, (32, 32, 16))
        split = predict_volume(network.cuda(), volume, (32, 32, 16), sw_device=torch.device("cuda"))
    assert split.device.type == "cpu"  # blended where the image lives
    assert torch.allclose(split, reference, atol=1e-4)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_training_with_autocast_on_the_gpu_runs_its_steps_and_learns(tiny_preprocessed, tmp_path, amp):
    cfg = tiny_train_config(tiny_preprocessed, tmp_path, "vnet3d", train={"device": "cuda", "amp": amp, "max_epochs": 4})
    metrics = train_model(cfg, stage="gpu_test")
    history = json.loads((tmp_path / "reports" / "details" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert 0.0 <= metrics["val_dice_mean"] <= 1.0
