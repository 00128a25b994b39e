"""Natural-image architectures: every one builds from its config, maps (B, 3, H, W) to (B, C, H, W) and learns; the
structure the papers describe is there (SegNet's indices, FCN-8s's fusion, PSPNet's bins); parameter counts at paper settings."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter
from torch import nn

from pipeline.config import ModelSettings, load_config
from pipeline.models import build_model
from pipeline.models.natural.blocks import unpool

VGG_SMALL = {"widths": [4, 8, 16, 16, 16]}
TINY_VIT = {"image_size": [64, 64], "hidden_size": 32, "mlp_dim": 64, "num_layers": 4, "num_heads": 4, "decoder_channels": 16}
SMALL = {
    "fcn32s": {**VGG_SMALL, "fc_width": 32},
    "fcn16s": {**VGG_SMALL, "fc_width": 32, "upsample": "bilinear"},
    "fcn8s": {**VGG_SMALL, "fc_width": 32},
    "deconvnet": {**VGG_SMALL, "fc_width": 32, "fc_kernel": 2},
    "segnet": VGG_SMALL,
    "pspnet": {"depth": 18, "width": 8, "head_channels": 16},
    "deeplabv1": {**VGG_SMALL, "fc_width": 32, "fc_dilation": 4},
    "deeplabv2": {"depth": 18, "width": 8},
    "deeplabv3": {"depth": 18, "width": 8, "aspp_channels": 16, "cascade": 1},
    "deeplabv3plus": {"depth": 18, "width": 8, "aspp_channels": 16, "low_level_channels": 8},
    "setr_naive": TINY_VIT,
    "setr_pup": TINY_VIT,
    "setr_mla": TINY_VIT,
    "swin_upernet": {
        "embed_dim": 12,
        "depths": [2, 2, 2, 2],
        "num_heads": [3, 3, 3, 3],
        "window_size": 4,
        "decoder_channels": 16,
    },
}
CLASSES = 5


def small_model(name: str) -> nn.Module:
    settings = TypeAdapter(ModelSettings).validate_python({"name": name, **SMALL[name]})
    torch.manual_seed(0)
    return build_model(settings, 3, CLASSES)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builds_from_config_keeps_the_input_size_and_a_step_lowers_the_loss(name):
    overrides = [f"model.name={name}", "train.patch_size=[64,64]", *(f"model.{k}={v}" for k, v in SMALL[name].items())]
    cfg = load_config([], overrides)
    model = build_model(cfg.model, 3, CLASSES)
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 64)
    target = (images[:, 0] > 0).long() + (images[:, 1] > 0.5).long()  # a learnable function of the pixels
    assert model(images).shape == (2, CLASSES, 64, 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(model(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-2:]) / 2 < losses[0], losses


def test_segnet_unpooling_puts_values_back_where_the_maxima_were():
    model = small_model("segnet")
    x = torch.randn(1, 3, 32, 32)
    block_out = model.encoder.blocks[0](x)
    pooled, indices = nn.functional.max_pool2d(block_out, 2, 2, return_indices=True)
    restored = unpool(pooled, indices, "max_unpool", block_out.shape)
    maxima = torch.zeros_like(block_out, dtype=torch.bool).flatten(2).scatter_(2, indices.flatten(2), True).view_as(block_out)
    assert torch.equal(restored[maxima], block_out[maxima])  # each pooled value is back at its argmax
    assert (restored[~maxima] == 0).all() and int(maxima.sum()) == pooled.numel()
    _, encoder_indices, _ = model.encoder(x)
    assert torch.equal(encoder_indices[0], indices)  # the decoder receives exactly these indices
    nails = unpool(pooled, None, "bed_of_nails", block_out.shape)
    assert torch.equal(nails[..., ::2, ::2], pooled) and (nails[..., 1::2, :] == 0).all()


def test_fcn8s_fuses_pool4_and_pool3_scores():
    model = small_model("fcn8s")
    shapes = []
    for layer in model.score_skips:
        layer.register_forward_hook(lambda module, args, out: shapes.append((module.in_channels, tuple(out.shape))))
    model(torch.randn(2, 3, 64, 64))
    assert shapes == [(16, (2, CLASSES, 4, 4)), (16, (2, CLASSES, 8, 8))]  # pool4 at stride 16, pool3 at stride 8
    assert [s.skips for s in (small_model("fcn32s"), small_model("fcn16s"), model)] == [(), (3,), (3, 2)]


def test_pspnet_pyramid_pools_to_four_bin_sizes():
    model = small_model("pspnet")
    sizes = []
    for branch in model.pyramid.branches:
        branch[0].register_forward_hook(lambda module, args, out: sizes.append(tuple(out.shape[-2:])))
    model(torch.randn(2, 3, 64, 64))  # batch 2: batch norm on the 1x1 bin needs more than one value per channel
    assert sizes == [(1, 1), (2, 2), (3, 3), (6, 6)]


def _parameters(name: str, classes: int, meta: bool = True, **settings) -> float:
    model_settings = TypeAdapter(ModelSettings).validate_python({"name": name, **settings})
    if meta:
        with torch.device("meta"):
            model = build_model(model_settings, 3, classes)
    else:
        model = build_model(model_settings, 3, classes)
    return sum(p.numel() for p in model.parameters()) / 1e6


@pytest.mark.parametrize(
    ("name", "classes", "paper_millions"),
    [
        ("fcn32s", 21, 134.0),  # Long et al., Table 1: FCN-VGG16
        ("fcn8s", 21, 134.0),
        ("deconvnet", 21, 252.0),  # Noh et al., Sec. 3.3
        ("segnet", 11, 29.5),  # Badrinarayanan et al., Table 6
        ("deeplabv1", 21, 20.5),  # Chen et al. 2015, Table 2: DeepLab-LargeFOV
        ("setr_naive", 150, 305.67),  # Zheng et al., Table 1 (T-Large)
        ("setr_pup", 150, 318.31),
        ("setr_mla", 150, 310.57),
    ],
)
def test_parameter_counts_at_paper_settings_are_within_five_percent(name, classes, paper_millions):
    assert _parameters(name, classes) == pytest.approx(paper_millions, rel=0.05)


def test_swin_t_encoder_has_the_papers_28m_parameters():
    model = build_model(TypeAdapter(ModelSettings).validate_python({"name": "swin_upernet"}), 3, 150)
    encoder = sum(p.numel() for p in model.encoder.parameters()) / 1e6
    assert encoder == pytest.approx(28.0, rel=0.05)  # Liu et al., Table 1: Swin-T 28M
