"""Hardware profiles: the memory budget, the network widths and the number of training steps.

A profile fixes *steps*, not minutes: the same plan trains the same number of optimizer steps on a
fast or a slow machine, so results depend on seeds and steps only. The CPU profile's budgets are
those of the hand-tuned CPU networks it replaces (a 96x96x32 V-Net patch at batch 2 with widths
8..64; 16 slices of 128x128 through a 16..256 U-Net): about as much work per step, so the default
``make run`` keeps its length on 2 cores. GPU profiles follow nnU-Net (widths 32 up to 320 in 3D and
512 in 2D, 250 iterations x 1000 epochs) with activations given about 45 % of the card's memory.
``tiny`` is for smoke tests and CI: two-stage networks of widths 4 and 8, two steps.

On the CPU profile a configuration whose step uses only part of the budget (a small dataset's 5 % batch cap, a
median image smaller than the budget's patch) trains more steps, up to 4x (``max_step_scale``;
:func:`pipeline.planning.planner.step_scale`), so each configuration gets about the profile's compute. On the
anisotropic MR set the 2D U-Net's batch is capped at 3 of the 18 its budget holds: at 350 steps it reached
out-of-fold Dice 0.748 (RESULTS.md). The CT phantom's configurations fill their budgets, so its steps do not change.
The CPU steps were set for the phantom's three organs (``reference_classes``); a dataset with more foreground classes
trains proportionally more (:func:`pipeline.planning.planner.class_factor`, within the same 4x cap): on an eight-class
multi-organ CT set, 8/3 x the U-Net's steps raised its fold-0 validation Dice from 0.689 to 0.919 (the adrenal glands
0.0 -> 0.62, the gallbladder 0.31 -> 0.90).

The CPU profile's low-resolution grid must let a patch cover half of the median image (nnU-Net: a
quarter). Measured on the CT phantom with the same 275 V-Net steps from scratch: at a quarter
(2.0 x 2.0 x 4.1 mm, 4 stages) test Dice 0.765; at a half (2.6 x 2.6 x 5.1 mm) 0.914. With so few
steps, context per voxel decides more than resolution.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HardwareProfile:
    """Budgets and training length of one kind of machine."""

    name: str
    budget_mb_2d: float  # activation MiB of one training step (all samples of the batch)
    budget_mb_3d: float
    reference_batch_2d: int  # the patch shrinks until this many samples fit the budget
    reference_batch_3d: int
    base_width_2d: int
    max_width_2d: int
    base_width_3d: int
    max_width_3d: int
    iterations_per_epoch: int
    epochs_2d: int
    epochs_3d: int
    val_every_2d: int
    val_every_3d: int
    prefer_lowres: bool  # `plan.configuration: 3d` trains 3d_lowres when it is planned
    lowres_coverage: float = 0.25  # 3d_lowres: the patch must cover at least this share of the median image
    min_batch: int = 2
    min_edge: int = 4  # smallest bottleneck edge (voxels)
    max_stages: int = 6
    max_step_scale: float = 1.0  # a configuration whose step uses 1/k of the budget trains min(k, this) x the steps
    reference_classes: int | None = None  # foreground classes the steps were set for: more classes train more steps


PROFILES: dict[str, HardwareProfile] = {
    "cpu": HardwareProfile(
        name="cpu",
        budget_mb_2d=400.0,
        budget_mb_3d=362.0,
        reference_batch_2d=8,
        reference_batch_3d=2,
        base_width_2d=16,
        max_width_2d=256,
        base_width_3d=8,
        max_width_3d=64,
        iterations_per_epoch=25,
        epochs_2d=14,
        epochs_3d=11,
        val_every_2d=4,
        val_every_3d=2,
        prefer_lowres=True,
        lowres_coverage=0.5,
        max_step_scale=4.0,
        reference_classes=3,
    ),
    "gpu24": HardwareProfile("gpu24", 11000.0, 11000.0, 12, 2, 32, 512, 32, 320, 250, 1000, 1000, 50, 50, False),
    "gpu80": HardwareProfile("gpu80", 36000.0, 36000.0, 12, 2, 32, 512, 32, 320, 250, 1000, 1000, 50, 50, False),
    "tiny": HardwareProfile("tiny", 2.0, 2.0, 2, 2, 4, 8, 4, 8, 2, 1, 1, 1, 1, True, max_stages=2),
}


def get_profile(name: str) -> HardwareProfile:
    """The named profile.

    Raises:
        KeyError: naming the known profiles.
    """
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown plan.profile '{name}'; known: {sorted(PROFILES)}") from None
