"""Networks build from config, keep the input's spatial shape, and learn on a tiny batch."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import PipelineConfig, load_config
from pipeline.errors import ConfigError
from pipeline.models import available_models, build_model
from pipeline.models.unet2d import UNet2d
from pipeline.models.vnet3d import VNet3d
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    ("name", "shape"),
    [("unet2d", (2, 3, 32, 48)), ("vnet3d", (1, 1, 16, 16, 24))],
)
def test_models_build_from_config_and_keep_spatial_shape(name, shape):
    model_cfg = {
        "unet2d": {"name": "unet2d", "widths": [4, 8, 16]},
        "vnet3d": {"name": "vnet3d", "widths": [4, 8], "convs": [1, 2]},
    }
    cfg = PipelineConfig.model_validate({"model": model_cfg[name], "train": {"patch_size": [16] * (len(shape) - 2)}})
    model = build_model(cfg.model, shape[1], 4)
    out = model(torch.randn(*shape))
    assert out.shape == (shape[0], 4, *shape[2:])


def test_registry_lists_models_and_rejects_unknown_names():
    assert {"unet2d", "vnet3d"} <= set(available_models())

    class Fake:
        name = "resnet9000"

    with pytest.raises(ConfigError, match="unknown model 'resnet9000'"):
        build_model(Fake(), 1, 2)


def test_shipped_configs_build_the_networks_they_name():
    for name in ("unet2d", "vnet3d"):
        cfg = load_config([REPO_ROOT / "configs" / "params.yaml", REPO_ROOT / "configs" / f"{name}.yaml"])
        assert cfg.model.name == name
        model = build_model(cfg.model, 3 if name == "unet2d" else 1, 4)
        assert sum(p.numel() for p in model.parameters()) > 10_000


def test_gpu_overlay_selects_a_gpu_profile_and_leaves_the_networks_to_the_plan():
    base = REPO_ROOT / "configs"
    vnet = load_config([base / "params.yaml", base / "gpu.yaml", base / "vnet3d.yaml", base / "gpu_vnet3d.yaml"])
    assert vnet.plan.profile == "gpu24" and vnet.plan.configuration == "3d"
    assert not {"widths", "pools", "kernels"} & vnet.model.model_fields_set and "patch_size" not in vnet.train.model_fields_set
    assert vnet.train.amp == "auto"


@pytest.mark.parametrize("network", ["unet2d", "vnet3d"])
def test_planned_per_axis_pooling_and_kernels_keep_the_input_shape(network):
    """A coarse axis pooled late (stride 1 first) and a 1-wide kernel along it, as the planner decides."""
    if network == "vnet3d":
        pools, kernels = ((1, 1, 1), (2, 2, 1), (2, 2, 2)), ((3, 3, 1), (3, 3, 3), (3, 3, 3))
        model, shape = VNet3d(1, 3, (4, 8, 16), (1, 1, 1), 3, "instance", pools, kernels), (16, 16, 4)
    else:
        pools, kernels = ((1, 1), (2, 1), (2, 2)), ((3, 1), (3, 3), (3, 3))
        model, shape = UNet2d(1, 3, (4, 8, 16), "batch", pools, kernels), (16, 8)
    out = model(torch.randn(2, 1, *shape))
    assert out.shape == (2, 3, *shape)
    assert model.divisor == ((4, 4, 2) if network == "vnet3d" else (4, 2))
    first = next(m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    assert first.kernel_size == kernels[0]
    downs = [m.stride for m in model.modules() if isinstance(m, torch.nn.Conv3d) and m.stride != (1, 1, 1)]
    assert network == "unet2d" or downs == [(2, 2, 1), (2, 2, 2)]


def test_vnet_widths_are_configurable_and_paper_widths_are_much_larger():
    slim = VNet3d(1, 4, (8, 16, 32, 64), (1, 2, 2, 2), 5)
    paper = VNet3d(1, 4)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(paper) > 20 * count(slim)
    kernels = {m.kernel_size for m in paper.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size != (1, 1, 1)}
    assert kernels == {(5, 5, 5), (2, 2, 2)}  # 5x5x5 stage convolutions, 2x2x2 stride-2 down-sampling
    assert any(isinstance(m, torch.nn.PReLU) for m in paper.modules())
    with pytest.raises(ValueError, match="one entry per width"):
        VNet3d(1, 2, (4, 8), (1,))


@pytest.mark.parametrize("name", ["unet2d", "vnet3d"])
def test_training_steps_lower_the_loss_on_a_tiny_batch(name):
    torch.manual_seed(0)
    model_cfg = {
        "unet2d": {"name": "unet2d", "widths": [8, 16]},
        "vnet3d": {"name": "vnet3d", "widths": [4, 8], "convs": [1, 1], "kernel_size": 3},
    }
    dims = 2 if name == "unet2d" else 3
    cfg = PipelineConfig.model_validate({"model": model_cfg[name], "train": {"patch_size": [16] * dims}})
    model = build_model(cfg.model, 1, 2)
    image = torch.zeros(2, 1, *[16] * dims)
    target = torch.zeros(2, *[16] * dims, dtype=torch.long)
    image[(slice(None), 0, *[slice(4, 12)] * dims)] = 1.0
    target[(slice(None), *[slice(4, 12)] * dims)] = 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(image), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
