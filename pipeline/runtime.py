"""Process-wide torch settings that results depend on, applied in one place for every stage.

On a CPU, the number of intra-op threads changes how convolutions and normalisations split their sums, so it changes
the last bits of every forward pass and, through hundreds of optimizer steps, the trained weights (measured: a V-Net's
weights after five steps differ between 1 and 2 threads). PyTorch's default is one thread per core, so a 2-core and a
16-core machine would train different models from the same seeds. ``base.torch_threads`` fixes the count instead.
"""

from __future__ import annotations

import torch


def pin_torch_threads(threads: int) -> None:
    """Use exactly ``threads`` intra-op threads (0 keeps PyTorch's default of one per core)."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
