"""Activation-memory estimate of *our own* networks, from a forward pass on PyTorch's meta device.

No memory is allocated and nothing is computed: the meta device propagates shapes only. The
estimate is the number of values every leaf module outputs (convolutions, norms, activations:
what autograd keeps for the backward pass) for one sample, in MiB at 4 bytes per value.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from pipeline.models.unet2d import UNet2d
from pipeline.models.vnet3d import VNet3d

Sizes = tuple[tuple[int, ...], ...]


def build_planned_network(
    dims: int, in_channels: int, num_classes: int, widths: tuple[int, ...], pools: Sizes, kernels: Sizes
) -> nn.Module:
    """The network a configuration trains: the 2D U-Net for 2D plans, the V-Net for 3D plans."""
    if dims == 2:
        return UNet2d(in_channels, num_classes, widths, "batch", pools, kernels)
    return VNet3d(in_channels, num_classes, widths, vnet_convs(len(widths)), 3, "instance", pools, kernels)


def vnet_convs(num_stages: int) -> tuple[int, ...]:
    """Convolutions per V-Net stage in planned networks: one in the input stage, two after (the CPU default's)."""
    return (1,) + (2,) * (num_stages - 1)


def activation_mb(network: nn.Module, in_channels: int, patch_size: tuple[int, ...]) -> float:
    """MiB of activations one sample of ``patch_size`` produces in ``network`` (meta-device forward)."""
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        total += output.numel()

    meta = network.to("meta")
    hooks = [m.register_forward_hook(count) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            meta(torch.empty(1, in_channels, *patch_size, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total * 4 / 2**20


@lru_cache(maxsize=4096)
def estimate_activation_mb(
    dims: int,
    in_channels: int,
    num_classes: int,
    patch_size: tuple[int, ...],
    widths: tuple[int, ...],
    pools: Sizes,
    kernels: Sizes,
) -> float:
    """Per-sample activation MiB of the planned network for this patch and topology (cached: arguments are tuples)."""
    with torch.device("meta"):
        network = build_planned_network(dims, in_channels, num_classes, tuple(widths), pools, kernels)
    return activation_mb(network, in_channels, tuple(int(p) for p in patch_size))
