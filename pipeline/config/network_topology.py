"""Per-stage, per-axis pooling and kernel sizes of the U-Net and V-Net (what the planner decides), torch-free so that
config validation and the networks share one check.

``pools[i]`` is the stride leading into stage ``i`` (``pools[0]`` is all ones); ``kernels[i]`` is the
convolution size inside stage ``i``. ``None`` keeps the classic network: stride 2 on every axis
and one kernel size everywhere.
"""

from __future__ import annotations

import math

Sizes = tuple[tuple[int, ...], ...]


def resolve_topology(num_stages: int, dims: int, pools: Sizes | None, kernels: Sizes | None, kernel: int) -> tuple[Sizes, Sizes]:
    """Fill in the classic defaults and check the shapes of explicit pools and kernels.

    Raises:
        ValueError: a list of the wrong length, an entry of the wrong dimension, a first pool that is
            not all ones, or an even kernel.
    """
    pools = tuple(tuple(p) for p in pools) if pools else ((1,) * dims, *(((2,) * dims,) * (num_stages - 1)))
    kernels = tuple(tuple(k) for k in kernels) if kernels else ((kernel,) * dims,) * num_stages
    for name, sizes in (("pools", pools), ("kernels", kernels)):
        if len(sizes) != num_stages or any(len(s) != dims for s in sizes):
            raise ValueError(f"{name} {[list(s) for s in sizes]} needs {num_stages} entries of {dims} sizes (one per stage)")
    if any(p != 1 for p in pools[0]):
        raise ValueError(f"the first stage does not pool: pools[0] must be {[1] * dims}, got {list(pools[0])}")
    if any(k % 2 == 0 for s in kernels for k in s):
        raise ValueError(f"kernel sizes must be odd, got {[list(s) for s in kernels]}")
    return pools, kernels


def total_stride(pools: Sizes) -> tuple[int, ...]:
    """Product of the strides per axis: a patch must be a multiple of it."""
    return tuple(math.prod(p[axis] for p in pools) for axis in range(len(pools[0])))


def same_padding(kernel: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(k // 2 for k in kernel)
