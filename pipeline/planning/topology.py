"""Network topology from voxel spacing and patch size: pooling per axis, kernels per axis, divisibility.

The rule is nnU-Net v2's (``get_pool_and_conv_props``), written for our networks:

* pool an axis only while its feature map stays at least ``2 * min_edge`` voxels long, and only
  while its current spacing is within a factor of 2 of the finest current spacing (an axis much
  coarser than the others is not pooled until the others have caught up);
* a lone pooled axis needs at least ``3 * min_edge`` voxels;
* an axis gets a 3-wide kernel once its spacing is within a factor of 2 of the finest, 1 before
  (so thick-slice data start with in-plane 3x3x1 convolutions);
* the bottleneck always uses 3-wide kernels; the patch is padded up to a multiple of the pooling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    """Per-stage pooling and kernel sizes of an encoder, finest stage first.

    ``pools[0]`` is all ones (the first stage does not pool); ``pools[i]`` is the per-axis stride that
    leads into stage ``i``. ``kernels[i]`` is the convolution size of stage ``i``.
    """

    pools: tuple[tuple[int, ...], ...]
    kernels: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]

    @property
    def num_stages(self) -> int:
        return len(self.pools)

    @property
    def divisor(self) -> tuple[int, ...]:
        """The patch must be a multiple of this along each axis (product of the strides)."""
        return tuple(math.prod(p[axis] for p in self.pools) for axis in range(len(self.patch_size)))


def pad_to_multiple(shape, divisor) -> tuple[int, ...]:
    """Round every axis of ``shape`` up to a multiple of ``divisor`` (itself when already one)."""
    return tuple(int(math.ceil(s / d) * d) for s, d in zip(shape, divisor))


def plan_topology(spacing, patch_size, min_edge: int = 4, max_stages: int = 99) -> Topology:
    """Pooling and kernels for a patch of ``patch_size`` voxels at ``spacing`` mm (nnU-Net's rule).

    Args:
        spacing: voxel size per axis (mm).
        patch_size: initial patch size per axis (voxels); the returned one is padded to the pooling.
        min_edge: smallest feature-map edge at the bottleneck.
        max_stages: cap on the number of stages (pooling steps + 1).
    """
    dims = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [float(s) for s in patch_size]
    kernel = [1] * dims
    pools: list[tuple[int, ...]] = [(1,) * dims]
    kernels: list[tuple[int, ...]] = []
    while len(pools) < max_stages:
        axes = [a for a in range(dims) if current_size[a] >= 2 * min_edge]
        if not axes:
            break
        finest = min(current_spacing[a] for a in axes)
        axes = [a for a in axes if current_spacing[a] / finest < 2]
        if len(axes) == 1 and current_size[axes[0]] < 3 * min_edge:
            break
        finest_all = min(current_spacing)
        kernel = [3 if kernel[a] == 3 or current_spacing[a] / finest_all < 2 else 1 for a in range(dims)]
        kernels.append(tuple(kernel))
        pool = tuple(2 if a in axes else 1 for a in range(dims))
        for a in axes:
            current_spacing[a] *= 2
            current_size[a] = math.ceil(current_size[a] / 2)
        pools.append(pool)
    kernels.append((3,) * dims)  # the bottleneck
    divisor = tuple(math.prod(p[a] for p in pools) for a in range(dims))
    return Topology(tuple(pools), tuple(kernels), pad_to_multiple(patch_size, divisor))
