"""Intensity normalisation: CT by dataset foreground statistics (nnU-Net style) or a fixed HU window; MR by per-case z-score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import PreprocessSettings

MIN_STD = 1e-6


@dataclass(frozen=True)
class IntensityStats:
    """Dataset-level foreground intensity statistics of one channel (from the fingerprint)."""

    mean: float
    std: float
    percentile_low: float
    percentile_high: float

    @classmethod
    def from_samples(cls, samples: np.ndarray, percentiles: tuple[float, float]) -> IntensityStats:
        """Compute statistics from sampled foreground voxel values (constant samples are allowed)."""
        samples = np.asarray(samples, dtype=np.float64)
        low, high = np.percentile(samples, percentiles)
        return cls(float(samples.mean()), float(samples.std()), float(low), float(high))


def normalise_ct(volume: np.ndarray, stats: IntensityStats | None, settings: PreprocessSettings) -> np.ndarray:
    """Normalise a CT volume (HU) to float32.

    ``percentile`` mode clips to the dataset's foreground percentiles then z-scores with the
    foreground mean/std; ``window`` mode clips to ``ct_window_hu`` and maps it to [0, 1].
    A zero standard deviation or window never divides by zero (row V7).

    Raises:
        ValueError: percentile mode without statistics.
    """
    volume = volume.astype(np.float32, copy=False)
    if settings.ct_normalisation == "window":
        low, high = settings.ct_window_hu
        return (np.clip(volume, low, high) - low) / max(high - low, MIN_STD)
    if stats is None:
        raise ValueError("percentile CT normalisation needs dataset intensity statistics (fingerprint)")
    clipped = np.clip(volume, stats.percentile_low, stats.percentile_high)
    return (clipped - np.float32(stats.mean)) / np.float32(max(stats.std, MIN_STD))


def normalise_mr(volume: np.ndarray) -> np.ndarray:
    """Z-score an MR volume over its non-zero voxels (zeros stay zero); constant volumes map to zero.

    Uses MONAI's ``NormalizeIntensity(nonzero=True)``, which guards against a zero std.
    """
    from monai.transforms import NormalizeIntensity

    return np.asarray(NormalizeIntensity(nonzero=True, dtype=np.float32)(volume.astype(np.float32, copy=False)))
