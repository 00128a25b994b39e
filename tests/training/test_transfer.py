"""Encoder weights go from an autoencoder into unet2d / vnet3d exactly, or fail naming the keys."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import PipelineConfig
from pipeline.errors import InvalidInputError
from pipeline.models import build_model
from pipeline.training.transfer import encoder_state, load_encoder, save_encoder

SEGMENTATION = {
    "unet2d": {"name": "unet2d", "widths": [4, 8, 16], "norm": "batch"},
    "vnet3d": {"name": "vnet3d", "widths": [4, 8, 16], "convs": [1, 2, 2], "kernel_size": 3, "norm": "instance"},
}


def _build(model: dict, dims: int, in_channels: int = 1):
    cfg = PipelineConfig.model_validate({"model": model, "train": {"patch_size": [16] * dims}})
    return build_model(cfg.model, in_channels, 4)


@pytest.mark.parametrize("target", ["unet2d", "vnet3d"])
def test_autoencoder_encoder_round_trips_into_the_segmentation_network_exactly(target, tmp_path):
    dims = 2 if target == "unet2d" else 3
    keys = {k: v for k, v in SEGMENTATION[target].items() if k != "name"}
    autoencoder = _build({"name": "autoencoder", "encoder": target, "variant": "variational", **keys}, dims)
    with torch.no_grad():
        for p in autoencoder.parameters():
            p.add_(torch.randn_like(p))  # make the weights distinctive
    save_encoder(tmp_path / "encoder.pt", autoencoder)
    segmentation = _build(SEGMENTATION[target], dims)
    report = load_encoder(segmentation, tmp_path / "encoder.pt")
    source, loaded = encoder_state(autoencoder), encoder_state(segmentation)
    assert report.complete and report.loaded == sorted(source) and set(loaded) == set(source)
    assert all(torch.equal(source[k], loaded[k]) for k in source)


def test_mismatched_or_partial_load_fails_naming_the_keys_and_loads_nothing(tmp_path):
    small = _build({"name": "autoencoder", "encoder": "unet2d", "widths": [4, 8], "norm": "batch"}, 2)
    save_encoder(tmp_path / "small.pt", small)
    target = _build(SEGMENTATION["unet2d"], 2)
    before = {k: v.clone() for k, v in encoder_state(target).items()}
    with pytest.raises(InvalidInputError) as info:
        load_encoder(target, tmp_path / "small.pt")
    message = str(info.value)
    assert "small.pt" in message and "missing: encoder.levels.2.0.weight" in message
    assert all(torch.equal(before[k], v) for k, v in encoder_state(target).items())

    wider = _build({"name": "unet2d", "widths": [4, 8, 32]}, 2)
    save_encoder(tmp_path / "wider.pt", wider)
    with pytest.raises(
        InvalidInputError, match=r"mismatched: encoder\.levels\.2\.0\.weight \(file \(32, 8, 3, 3\) vs model \(16, 8, 3, 3\)\)"
    ):
        load_encoder(target, tmp_path / "wider.pt")
    relaxed = load_encoder(target, tmp_path / "wider.pt", strict=False)
    assert relaxed.loaded and relaxed.mismatched and not relaxed.complete
    assert torch.equal(encoder_state(target)["encoder.levels.0.0.weight"], encoder_state(wider)["encoder.levels.0.0.weight"])
