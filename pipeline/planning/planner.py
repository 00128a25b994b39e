"""The planner: dataset fingerprint in, plan out. The rules are nnU-Net v2's ``ExperimentPlanner``'s.

* Target spacing: the median spacing; when one axis is more than 3x coarser than the others *and*
  has fewer than a third of their voxels, that axis takes the 10th percentile of its spacings
  instead (never finer than the other axes).
* Per configuration: an initial patch with the aspect ratio of the voxel size (256**3 or 2048**2
  voxels), clipped to the median shape; the topology from :func:`plan_topology`; then, while our
  network's activation estimate for ``reference_batch`` samples exceeds the profile's budget, the
  axis largest relative to the median shape shrinks by one pooling step.
* Batch size: what the budget holds, at most 5 % of the dataset's voxels per step, at least 2.
* Steps: the profile's, times :func:`step_scale` (on the CPU profile, up to 4x for a configuration whose step uses a
  fraction of the budget or whose dataset has more than three foreground classes, :func:`class_factor`; 1x on GPU
  profiles, which train nnU-Net's 250 x 1000 steps). Validation keeps its count.
* ``3d_lowres`` exists when the full-resolution patch covers under a quarter of the median image
  (the profile's ``lowres_coverage``; a half on the CPU profile): the spacing grows by 3 % steps (the
  anisotropic axes first) until it does.
* ``2d`` slices across the grid's coarsest axis (:func:`slice_axis`; z when axes tie), its patch spanning the two
  others, as nnU-Net's ``transpose_forward`` does.
* Normalisation: CT by the dataset's foreground statistics; every other modality by a per-scan
  z-score inside a foreground mask (:func:`pipeline.preprocess.intensity.foreground_threshold`), after N4 bias-field
  correction in that mask where the fingerprint's bias probe finds it makes the labelled classes more separable
  (:func:`bias_correction_from_probe`). nnU-Net has no bias correction; on the brain MR phantom a bias hot spot brighter
  than a lesion elsewhere was segmented as the lesion without it, and the probe keeps N4 there; on compact structures
  told apart by intensity alone, N4 flattens the contrast (Fisher's ratio 1.989 -> 0.013) and the probe leaves it off
  (``benchmarks/RESULTS.md``).

One deliberate difference: ``2d`` is planned on the grid of the profile's 3D choice. On GPU profiles
that is the full-resolution grid, as in nnU-Net. On the CPU profile, when ``3d_lowres`` exists, it
is the low-resolution grid: at full resolution a 2-core step sees a quarter of the anatomy per
pixel budget, and on the CT phantom a full-resolution 2D U-Net never learned the spleen in the
profile's 350 steps (Dice 0.0), where the same network on the coarser grid does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.planning.memory import estimate_activation_mb
from pipeline.planning.plans import ChannelNormalisation, ConfigurationPlan, Plans
from pipeline.planning.profiles import HardwareProfile
from pipeline.planning.topology import plan_topology

ANISOTROPY_THRESHOLD = 3.0
LOWRES_SPACING_STEP = 1.03
DATASET_FRACTION_PER_STEP = 0.05


@dataclass(frozen=True)
class PlanningInput:
    """What the planner needs from the fingerprint (RAS axes x, y, z)."""

    dataset: str
    modalities: tuple[str, ...]
    labels: dict[str, str]
    spacings: np.ndarray  # (N, 3) mm
    shapes_after_crop: np.ndarray  # (N, 3) voxels
    intensity: dict | None = None  # CT foreground statistics of channel 0 (mean, std, percentile_low/high)
    context_slices: int = 1  # 2.5D input of the 2D U-Net

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def fullres_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Median spacing, with nnU-Net's anisotropy rule. Returns (spacing, the anisotropic axis or None)."""
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    target = np.percentile(spacings, 50, axis=0)
    sizes = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(target[others])
    aniso_voxels = sizes[worst] * ANISOTROPY_THRESHOLD < min(sizes[others])
    if not (aniso_spacing and aniso_voxels):
        return target, None
    coarse = np.percentile(spacings[:, worst], 10)
    target[worst] = max(coarse, max(target[others]) + 1e-5) if coarse < max(target[others]) else coarse
    return target, worst


def median_shape_at(spacings: np.ndarray, shapes: np.ndarray, target) -> np.ndarray:
    """Median over cases of the cropped shape resampled to ``target`` spacing (rounded voxels)."""
    resampled = np.round(np.asarray(shapes, float) * np.asarray(spacings, float) / np.asarray(target, float))
    return np.median(resampled, axis=0)


def network_input_channels(channels: int, context_slices: int) -> int:
    """Input channels of a network fed ``channels`` image channels: a 2.5D network (``context_slices`` = k) sees each on
    its 2k + 1 neighbouring slices; a 3D one has k = 0. The one rule planning, training and inference share."""
    return channels * (2 * context_slices + 1)


def network_widths(num_stages: int, base: int, cap: int) -> tuple[int, ...]:
    """Widths doubling from ``base`` per stage up to ``cap``."""
    return tuple(min(base * 2**i, cap) for i in range(num_stages))


def slice_axis(spacing) -> int:
    """The axis a 2D network slices across: the coarsest of the grid (nnU-Net's ``transpose_forward`` puts it first),
    z when several tie, so an isotropic or axial dataset is sliced axially and thick sagittal slices sagittally."""
    spacing = np.asarray(spacing, dtype=float)
    return int(max(np.flatnonzero(np.isclose(spacing, spacing.max(), rtol=1e-6))))


def plan_configuration(
    name: str,
    spacing,
    median_shape,
    profile: HardwareProfile,
    in_channels: int,
    num_classes: int,
    dataset_voxels: float,
    data_identifier: str,
) -> ConfigurationPlan:
    """Patch, batch and topology of one configuration (2D when ``spacing`` has two entries)."""
    dims = len(spacing)
    spacing, median = np.asarray(spacing, float), np.asarray(median_shape, float)
    budget = profile.budget_mb_2d if dims == 2 else profile.budget_mb_3d
    reference_batch = profile.reference_batch_2d if dims == 2 else profile.reference_batch_3d
    base, cap = (profile.base_width_2d, profile.max_width_2d) if dims == 2 else (profile.base_width_3d, profile.max_width_3d)
    inverse = 1 / spacing
    start = inverse * ((256**3 if dims == 3 else 2048**2) / np.prod(inverse)) ** (1 / dims)
    patch = [int(min(round(p), m)) for p, m in zip(start, median)]

    def estimate(topology) -> float:
        widths = network_widths(topology.num_stages, base, cap)
        return estimate_activation_mb(
            dims, in_channels, num_classes, tuple(topology.patch_size), widths, topology.pools, topology.kernels
        )

    topology = plan_topology(spacing, patch, profile.min_edge, profile.max_stages)
    per_sample = estimate(topology)
    while per_sample * reference_batch > budget:
        patch = list(topology.patch_size)
        axis = int(np.argsort(np.asarray(patch) / median)[-1])
        trial = list(patch)
        trial[axis] -= topology.divisor[axis]
        step = plan_topology(spacing, trial, profile.min_edge, profile.max_stages).divisor[axis] if trial[axis] > 0 else 0
        if step <= 0 or patch[axis] - step < 1:
            break  # nothing left to shrink: the budget is too small for even the smallest patch
        patch[axis] -= step
        topology = plan_topology(spacing, patch, profile.min_edge, profile.max_stages)
        per_sample = estimate(topology)
    batch = round(budget / per_sample)
    cap_5pct = round(dataset_voxels * DATASET_FRACTION_PER_STEP / math.prod(topology.patch_size))
    batch = max(min(batch, cap_5pct), profile.min_batch)
    scale = step_scale(budget, per_sample * batch, profile.max_step_scale, class_factor(num_classes - 1, profile))
    epochs = profile.epochs_2d if dims == 2 else profile.epochs_3d
    val_every = profile.val_every_2d if dims == 2 else profile.val_every_3d
    return ConfigurationPlan(
        name=name,
        data_identifier=data_identifier,
        spacing=tuple(float(s) for s in spacing) if dims == 3 else (0.0, 0.0, 0.0),
        median_shape=tuple(int(m) for m in median),
        patch_size=tuple(int(p) for p in topology.patch_size),
        batch_size=int(batch),
        widths=network_widths(topology.num_stages, base, cap),
        pools=topology.pools,
        kernels=topology.kernels,
        iterations_per_epoch=profile.iterations_per_epoch,
        max_epochs=max(1, math.floor(epochs * scale)),
        val_every=max(1, math.floor(val_every * scale)),
        estimated_activation_mb=round(per_sample, 3),
    )


def step_scale(budget_mb: float, step_mb: float, max_scale: float, classes: float = 1.0) -> float:
    """How many times the profile's steps a configuration trains: the budget over what one of its steps uses (at least
    1), times ``classes`` (:func:`class_factor`), at most ``max_scale``. A step the 5 % batch cap or the median shape
    makes smaller than the budget then gets proportionally more of them, so every configuration trains about the
    profile's compute, not its step count."""
    return float(min(max(budget_mb / step_mb, 1.0) * classes, max_scale))


def class_factor(foreground_classes: int, profile: HardwareProfile) -> float:
    """More steps for more classes: the foreground classes over the profile's ``reference_classes`` (the CT phantom's
    three, for which the CPU profile's steps were set), at least 1; 1 on profiles without a reference (the GPU profiles
    train nnU-Net's 250,000 steps, ample for any label set). On a multi-organ CT set with eight classes the CPU
    profile's 350 U-Net steps had only begun to learn the small organs (``benchmarks/RESULTS.md``)."""
    if not profile.reference_classes:
        return 1.0
    return max(1.0, foreground_classes / profile.reference_classes)


def lowres_spacings(fullres: np.ndarray, median_fullres: np.ndarray):
    """Yield growing spacings (the coarse-relative-to-finest axes first) and the median shape on each; the caller plans
    a patch on each and stops when it covers enough of the image."""
    spacing = np.asarray(fullres, float).copy()
    while True:
        largest = spacing.max()
        coarser = largest / spacing > 2
        if coarser.any():
            spacing[coarser] *= LOWRES_SPACING_STEP
        else:
            spacing *= LOWRES_SPACING_STEP
        yield spacing.copy(), np.asarray(fullres) / spacing * median_fullres


def bias_correction_from_probe(probe: list[dict], modalities: tuple[str, ...]) -> tuple[str, ...]:
    """Per channel, ``n4`` where the fingerprint's bias probe found the labelled classes more separable after N4 than
    without (:func:`pipeline.preprocess.intensity.class_separation`), else ``none`` (nnU-Net's choice; also CT channels
    and channels the probe did not measure: the probe's i-th entry speaks for channel i only if it names it)."""
    corrections = []
    for i, channel in enumerate(modalities):
        p = probe[i] if i < len(probe) and probe[i]["channel"] == channel else None
        corrections.append("n4" if p is not None and p["n4"] > p["none"] and channel.upper() != "CT" else "none")
    return tuple(corrections)


def normalisation_for(
    modalities: tuple[str, ...],
    intensity: dict | None,
    bias_correction: str | tuple[str, ...] = "n4",
    masks: tuple[str, ...] = (),
) -> tuple[ChannelNormalisation, ...]:
    """CT channels by the dataset's foreground statistics; every other channel by a per-scan z-score in its foreground
    mask (or, where ``masks`` says ``none``, over every voxel), after ``bias_correction`` (``n4`` or ``none``; one value
    for every channel, or one per channel)."""
    if isinstance(bias_correction, str):
        bias_correction = (bias_correction,) * len(modalities)
    masks = masks or ("foreground",) * len(modalities)
    schemes = []
    for channel, correction, mask in zip(modalities, bias_correction, masks, strict=True):
        if channel.upper() == "CT":
            if intensity is None:
                raise ValueError("a CT channel needs the fingerprint's foreground intensity statistics")
            schemes.append(ChannelNormalisation(channel=channel, scheme="ct", mask="none", **intensity))
        else:
            schemes.append(ChannelNormalisation(channel=channel, scheme="zscore", mask=mask, bias_correction=correction))
    return tuple(schemes)


def make_plans(
    data: PlanningInput,
    profile: HardwareProfile,
    bias_correction: str | tuple[str, ...] = "n4",
    masks: tuple[str, ...] = (),
) -> Plans:
    """Plan ``2d``, ``3d_fullres`` and (when needed) ``3d_lowres`` for a dataset under a hardware profile."""
    spacing, aniso_axis = fullres_spacing(data.spacings, data.shapes_after_crop)
    median = median_shape_at(data.spacings, data.shapes_after_crop, spacing)
    n = len(data.spacings)
    voxels = float(np.prod(median) * n)
    channels = len(data.modalities)
    fullres = plan_configuration("3d_fullres", spacing, median, profile, channels, data.num_classes, voxels, "fullres")
    configurations = {"3d_fullres": fullres}
    if math.prod(fullres.patch_size) / np.prod(median) < profile.lowres_coverage:
        for low_spacing, low_median in lowres_spacings(spacing, median):
            lowres = plan_configuration(
                "3d_lowres", low_spacing, np.round(low_median), profile, channels, data.num_classes, voxels, "lowres"
            )
            if math.prod(lowres.patch_size) / np.prod(np.round(low_median)) >= profile.lowres_coverage:
                break
        configurations["3d_lowres"] = lowres
    default_3d = "3d_lowres" if profile.prefer_lowres and "3d_lowres" in configurations else "3d_fullres"
    grid = configurations[default_3d]  # the 2D network trains on the grid of the profile's 3D choice
    across = slice_axis(grid.spacing)
    in_plane = [axis for axis in range(3) if axis != across]
    two_d = plan_configuration(
        "2d",
        [grid.spacing[a] for a in in_plane],
        [grid.median_shape[a] for a in in_plane],
        profile,
        network_input_channels(channels, data.context_slices),
        data.num_classes,
        voxels,
        grid.data_identifier,
    )
    configurations = {"2d": two_d.model_copy(update={"spacing": grid.spacing, "slice_axis": across}), **configurations}
    return Plans(
        dataset=data.dataset,
        modalities=data.modalities,
        labels=data.labels,
        profile=profile.name,
        num_training_cases=n,
        median_spacing=tuple(float(s) for s in np.median(data.spacings, axis=0)),
        fullres_spacing=tuple(float(s) for s in spacing),
        anisotropic_axis=aniso_axis,
        median_shape_fullres=tuple(int(m) for m in median),
        normalisation=normalisation_for(data.modalities, data.intensity, bias_correction, masks),
        configurations=configurations,
        default_3d=default_3d,
    )
