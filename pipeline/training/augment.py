"""Patch augmentation from config, built from MONAI dictionary transforms.

Spatial: random rotation about the axial (z) axis and isotropic scaling (``RandAffined``), elastic
deformation (``Rand2DElasticd`` / ``Rand3DElasticd``), flips. Intensity: gamma
(``RandAdjustContrastd``, statistics retained) and Gaussian noise. Images are resampled
bilinearly, labels by nearest neighbour. Each sample is drawn from its own seed so augmentation is
reproducible per sample (see ``pipeline.training.data``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from monai.transforms import Randomizable

from pipeline.config import AugmentSettings


def build_augmentation(
    settings: AugmentSettings, spatial_dims: int, with_label: bool = True
) -> Callable[[dict, int], dict] | None:
    """Return ``augment(sample, seed) -> sample`` or ``None`` when every probability is zero.

    ``with_label=False`` augments images alone (autoencoder pretraining). With labels, an ``instances`` map (instance
    ids, Mask R-CNN) moves with the image and labels where a sample has one, so boxes and masks derived from it
    after augmentation move together.
    """
    from monai import transforms as mt

    keys, modes = (
        (["image", "label", "instances"], ("bilinear", "nearest", "nearest")) if with_label else (["image"], ("bilinear",))
    )
    chain = []
    rotate = math.radians(settings.rotate_degrees)
    scale = (settings.scale_range[0] - 1.0, settings.scale_range[1] - 1.0)
    if settings.affine_prob > 0:
        rotate_range = rotate if spatial_dims == 2 else (0.0, 0.0, rotate)
        chain.append(
            mt.RandAffined(
                keys,
                prob=settings.affine_prob,
                rotate_range=rotate_range,
                scale_range=[scale] * spatial_dims,
                mode=modes,
                padding_mode="zeros",
                allow_missing_keys=True,
            )
        )
    if settings.elastic_prob > 0:
        elastic = mt.Rand2DElasticd if spatial_dims == 2 else mt.Rand3DElasticd
        # 3D: Gaussian-smoothed displacement field; 2D: B-spline grid with control points 2 x sigma_max apart
        grid = int(2 * settings.elastic_sigma[1])
        kwargs = {"sigma_range": settings.elastic_sigma} if spatial_dims == 3 else {"spacing": (grid, grid)}
        chain.append(
            _SkipWhenNotDrawn(
                elastic,
                keys,
                prob=settings.elastic_prob,
                magnitude_range=settings.elastic_magnitude,
                mode=modes,
                padding_mode="zeros",
                allow_missing_keys=True,
                **kwargs,
            )
        )
    for axis in settings.flip_axes:
        if axis < spatial_dims:
            chain.append(mt.RandFlipd(keys, prob=settings.flip_prob, spatial_axis=axis, allow_missing_keys=True))
    if settings.gamma_prob > 0:
        chain.append(mt.RandAdjustContrastd("image", prob=settings.gamma_prob, gamma=settings.gamma_range, retain_stats=True))
    if settings.noise_prob > 0 and settings.noise_std > 0:
        chain.append(mt.RandGaussianNoised("image", prob=settings.noise_prob, std=settings.noise_std))
    if not chain:
        return None
    compose = mt.Compose(chain)

    def augment(sample: dict, seed: int) -> dict:
        compose.set_random_state(seed=seed)
        out = compose(sample)
        plain = {key: _plain(value) for key, value in out.items()}
        plain["image"] = plain["image"].float()
        for key in ("label", "instances"):  # resampled by nearest neighbour: back to integers
            if key in plain:
                plain[key] = plain[key].round().long()
        return plain

    return augment


class _SkipWhenNotDrawn(Randomizable):
    """A MONAI random dictionary transform that costs nothing on the samples its coin leaves alone.

    MONAI's ``Rand2DElasticd``/``Rand3DElasticd`` resample every key through an identity grid when their coin says no
    (11 ms per 2D sample here, most of the U-Net's sampling time). This wrapper reads the coin the transform is about to
    draw (its own generator, restored afterwards) and passes such samples through untouched. The output is
    bit-identical: the identity resampling returns its input unchanged, and the transform's generator is reseeded for
    every sample by ``Compose.set_random_state``.
    """

    def __init__(self, transform_class, *args, **kwargs):
        self.transform = transform_class(*args, **kwargs)

    def set_random_state(self, seed=None, state=None):
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data) -> None:
        self.transform.randomize(data)

    def __call__(self, data: dict) -> dict:
        generator = self.transform.R
        saved = generator.get_state()
        drawn = generator.rand() < self.transform.prob  # RandomizableTransform.randomize's draw
        generator.set_state(saved)
        return self.transform(data) if drawn else dict(data)


def _plain(value):
    """MetaTensor -> plain contiguous tensor (cheaper to collate, no metadata to carry)."""
    if hasattr(value, "as_tensor"):
        value = value.as_tensor()
    return torch.as_tensor(value).contiguous()
