"""The shared activation layer: each kind's values, and why the U-Net's default is not ReLU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.config import PipelineConfig
from pipeline.models import build_model
from pipeline.models.layers import activation_layer
from pipeline.models.unet2d import DoubleConv2d


@pytest.mark.parametrize(("kind", "negative"), [("relu", 0.0), ("leaky_relu", -0.02), ("prelu", -0.5)])
def test_each_activation_scales_negative_inputs_by_its_slope(kind, negative):
    layer = activation_layer(kind, 3)
    x = torch.tensor([[-2.0, 3.0]]).repeat(3, 1)[None, :, :, None]  # (1, 3 channels, 2, 1)
    out = layer(x.clone())
    assert torch.allclose(out[0, :, 0, 0], torch.full((3,), negative))  # PReLU starts at slope 0.25
    assert torch.allclose(out[0, :, 1, 0], torch.full((3,), 3.0))


def test_an_unknown_activation_is_refused_by_name():
    with pytest.raises(ValueError, match="'gelu'"):
        activation_layer("gelu", 3)


@pytest.mark.parametrize(("kind", "passes_gradient"), [("relu", False), ("prelu", True)])
def test_a_unit_pushed_negative_everywhere_passes_gradient_only_without_relu(kind, passes_gradient):
    """The U-Net's failure on abdomen_mr in one block: once every pre-activation is negative, ReLU passes no gradient
    back, so nothing can bring the unit back; PReLU does."""
    torch.manual_seed(0)
    block = DoubleConv2d(1, 2, norm="none", activation=kind)
    with torch.no_grad():
        for conv in (block[0], block[3]):
            conv.weight.fill_(-1.0)
            conv.bias.fill_(-1.0)
    x = (torch.rand(1, 1, 6, 6) + 0.1).requires_grad_()  # positive input: every pre-activation negative
    block(x).sum().backward()
    assert bool(x.grad.abs().sum() > 0) == passes_gradient


@pytest.mark.parametrize("kind", ["relu", "leaky_relu", "prelu"])
def test_the_configured_activation_is_the_one_the_unet_is_built_with(kind):
    cfg = PipelineConfig.model_validate({"model": {"name": "unet2d", "widths": [4, 8, 16], "activation": kind}})
    model = build_model(cfg.model, 1, 3)
    kinds = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "prelu": nn.PReLU}
    found = [type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.PReLU))]
    assert found == [kinds[kind]] * 10  # 2 per double convolution: 3 encoder levels + 2 decoder levels
