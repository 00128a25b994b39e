"""Intensity normalisation and the foreground mask (one rule for cropping, fingerprinting and normalising).

CT: by dataset foreground statistics (nnU-Net style) or a fixed HU window. Every other modality
(MR, PET, ...): per-scan z-score with the mean and standard deviation *inside the foreground*, found
by :func:`foreground_threshold`. Magnitude MR has non-zero (Rician) background noise, so "non-zero" is not
"foreground": a z-score over non-zero voxels gives the same tissue a different value depending on
how much of the field of view the anatomy fills. A threshold above the noise peak separates the noise
floor from the tissue and does not depend on that fraction.

MR intensities also drift across the field of view with the receive coil's sensitivity (the bias field): the same
tissue can be 30 % brighter on one side of a scan, brighter than a lesion on the other. N4 (:func:`correct_bias_field`,
SimpleITK) divides such a field out before the z-score. But a smooth field can also fit, and flatten, the contrast
between a few compact structures that differ only in intensity. So the plan measures, on labelled training scans,
whether N4 makes the labelled classes more separable (:func:`class_separation`, the fingerprint's bias probe), and
corrects only the channels where it does.
"""

from __future__ import annotations

import math
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
    if settings.ct_normalisation == "window":
        low, high = settings.ct_window_hu
        return (np.clip(volume.astype(np.float32, copy=False), low, high) - low) / max(high - low, MIN_STD)
    if stats is None:
        raise ValueError("percentile CT normalisation needs dataset intensity statistics (fingerprint)")
    # In place on one float32 copy (which keeps the volume's memory order): the same float32 operations as
    # (clip(volume) - mean) / std, without more full-size temporaries.
    out = volume.astype(np.float32)
    np.clip(out, stats.percentile_low, stats.percentile_high, out=out)
    out -= np.float32(stats.mean)
    out /= np.float32(max(stats.std, MIN_STD))
    return out


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the value that maximises the between-class variance of a ``bins``-bin histogram."""
    values = np.asarray(values, dtype=np.float64).ravel()
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return low
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1 + int(np.argmax(between[:-1]))])


NOISE_PEAK_RANGE = 0.2  # a background peak lies in the lowest 20 % of the intensity range
NOISE_WIDTHS = 4.0  # threshold = peak + 4 upper half-widths: ~5.7 sigma of Rayleigh noise, ~4.7 sigma of Gaussian


def foreground_threshold(volume: np.ndarray, bins: int = 1024) -> float:
    """The intensity above which a non-CT scan holds anatomy.

    Background in magnitude MR is Rician noise: the tallest peak of the histogram, at the low end. The
    threshold sits ``NOISE_WIDTHS`` upper half-widths at half-maximum above that peak, which keeps
    false positives near 1e-6 of the background whatever share of the field of view the anatomy fills,
    and equals "non-zero" for a zero background. Without such a peak (the anatomy fills the view), it
    falls back to Otsu's threshold. Otsu alone is not used because with two tissues it splits them,
    not tissue from background.

    Otsu's threshold must lie in a valley of the histogram (a density under :data:`VALLEY_FRACTION` of the tallest
    peak's). When the background is a uniform non-noise level above the low end (a bright background tissue) and the
    anatomy fills a few percent of the view, Otsu is pulled onto the flank of the background peak and would keep a
    speckled third of the background. The tallest peak is then the background, and the threshold is the lowest point
    of the smoothed histogram between it and the noise rule's threshold (where the background's tail meets the anatomy).
    """
    values = np.asarray(volume, dtype=np.float64).ravel()
    low, high = float(values.min()), float(np.percentile(values, 99.9))
    if high <= low:
        return low
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    peak = int(np.argmax(counts))
    above = np.nonzero(counts[peak:] < counts[peak] / 2)[0]
    half_width = (above[0] if above.size else 1) * (edges[1] - edges[0])
    above_peak = float(edges[peak] + NOISE_WIDTHS * half_width)
    if peak <= NOISE_PEAK_RANGE * bins:
        return above_peak
    otsu = otsu_threshold(values)
    width = max(3, int(round(half_width / (edges[1] - edges[0]))))
    smooth = np.convolve(counts, np.ones(width) / width, mode="same")
    if smooth[_bin_of(edges, otsu)] < VALLEY_FRACTION * smooth[peak]:
        return otsu
    stop = _bin_of(edges, above_peak)
    return float(edges[peak + int(np.argmin(smooth[peak : stop + 1]))]) if stop > peak else above_peak


VALLEY_FRACTION = 0.25  # Otsu's threshold is accepted where the histogram is under a quarter of its tallest peak


def _bin_of(edges: np.ndarray, value: float) -> int:
    return int(np.clip(np.searchsorted(edges, value) - 1, 0, len(edges) - 2))


def foreground_mask(image: np.ndarray, is_ct: bool, body_threshold_hu: float, masked: tuple[bool, ...] = ()) -> np.ndarray:
    """The voxels that hold anatomy, (x, y, z) from a (C, x, y, z) image.

    CT: the first channel above ``body_threshold_hu``. Other modalities: any channel above its
    :func:`foreground_threshold`, among the channels the plan z-scores in a foreground mask (``masked``, per channel;
    empty = every channel); every voxel when no channel is masked (the anatomy fills the view).
    """
    if is_ct:
        return above(image[0], body_threshold_hu)
    channels = [channel for channel, use in zip(image, masked or (True,) * len(image), strict=True) if use]
    if not channels:
        return np.ones(image.shape[1:], dtype=bool)
    return np.any([channel_foreground(channel) for channel in channels], axis=0)


def above(values: np.ndarray, threshold: float) -> np.ndarray:
    """``values > threshold``, without converting integer voxels (CT stored as int16) to float64 first.

    For integers, x > t exactly when x > floor(t), so the comparison stays in the voxels' own type.
    """
    if values.dtype.kind not in "iu":
        return values > threshold
    info, floor = np.iinfo(values.dtype), math.floor(threshold)
    if floor < info.min or floor >= info.max:
        return np.full(values.shape, floor < info.min)
    return values > values.dtype.type(floor)


def normalise_zscore(volume: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Z-score ``volume`` with the mean and standard deviation of the voxels in ``mask`` (all voxels when ``None``);
    voxels outside the mask become 0 (as nnU-Net does), so background noise does not reach the network.

    A constant foreground never divides by zero (row V7): the standard deviation is floored at ``MIN_STD``.
    """
    volume = volume.astype(np.float32, copy=False)
    inside = volume[mask] if mask is not None and mask.any() else volume.ravel()
    mean, std = float(inside.mean(dtype=np.float64)), float(inside.std(dtype=np.float64))
    out = (volume - np.float32(mean)) / np.float32(max(std, MIN_STD))
    if mask is not None and mask.any():
        out[~mask] = 0
    return out


N4_FIT_EDGE = 32  # N4 fits the field on a copy subsampled to about this many voxels per axis


def correct_bias_field(volume: np.ndarray, mask: np.ndarray, spacing) -> np.ndarray:
    """Divide out the smooth multiplicative bias field of one MR channel (x, y, z), estimated by N4 in ``mask``.

    SimpleITK's ``N4BiasFieldCorrectionImageFilter`` with its defaults (4 levels x 50 iterations, cubic B-spline)
    fits the log field on a copy subsampled to about :data:`N4_FIT_EDGE` voxels per axis (a bias field is smooth); the
    field is then evaluated on the full grid. One thread: N4's sums then run in one order, so the result is the same
    on every machine. A channel whose mask holds a value <= 0 (N4 works on logarithms) is returned unchanged.
    """
    import SimpleITK as sitk

    volume = np.asarray(volume, dtype=np.float32)
    if not mask.any() or volume[mask].min() <= 0:
        return volume
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.T))
    image.SetSpacing([float(s) for s in spacing])
    fit_mask = sitk.GetImageFromArray(np.ascontiguousarray(mask.T.astype(np.uint8)))
    fit_mask.CopyInformation(image)
    factors = [max(1, int(n) // N4_FIT_EDGE) for n in volume.shape]
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # N4's inner filters take the global default, not the filter's
    try:
        n4 = sitk.N4BiasFieldCorrectionImageFilter()
        n4.SetNumberOfThreads(1)
        n4.Execute(sitk.Shrink(image, factors), sitk.Shrink(fit_mask, factors))
        log_field = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image)).T
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return (volume / np.exp(log_field)).astype(np.float32)


def channel_foreground(volume: np.ndarray) -> np.ndarray:
    """The voxels of one non-CT channel above its :func:`foreground_threshold`."""
    return volume > foreground_threshold(volume)


def normalise_mr(
    volume: np.ndarray,
    spacing=None,
    bias_correction: bool = False,
    mask: np.ndarray | None = None,
    use_mask: bool = True,
) -> np.ndarray:
    """Z-score one MR (or other non-CT) channel inside its foreground (``mask``, by default :func:`channel_foreground`),
    after :func:`correct_bias_field` in that foreground when ``bias_correction`` (``spacing`` in mm then needed).

    ``use_mask=False`` z-scores over every voxel and zeroes none (``preprocess.mr_normalisation_mask: none``).
    """
    if mask is None and (use_mask or bias_correction):
        mask = channel_foreground(volume)
    if bias_correction:
        volume = correct_bias_field(volume, mask, spacing)
    return normalise_zscore(volume, mask if use_mask else None)


def class_moments(volume: np.ndarray, label: np.ndarray, mask: np.ndarray, num_classes: int) -> list[list[float]]:
    """Per class (0 .. ``num_classes - 1``): [voxels, sum, sum of squares] of ``volume`` inside ``mask`` (float64), the
    sufficient statistics from which :func:`class_separation` pools several scans."""
    values, labels = volume[mask].astype(np.float64), label[mask].astype(np.int64)
    count = np.bincount(labels, minlength=num_classes)[:num_classes]
    total = np.bincount(labels, weights=values, minlength=num_classes)[:num_classes]
    squares = np.bincount(labels, weights=values**2, minlength=num_classes)[:num_classes]
    return np.stack([count, total, squares], axis=1).tolist()


def class_separation(moments) -> float:
    """Fisher's ratio of pooled class moments (summed over scans): the between-class variance of the voxel values over
    their within-class variance. Higher means the labelled structures differ more in intensity, consistently across
    scans; 0 when fewer than two classes are present."""
    moments = np.asarray(moments, dtype=np.float64).reshape(-1, 3)
    present = moments[moments[:, 0] > 0]
    if len(present) < 2:
        return 0.0
    count, total, squares = present.T
    means = total / count
    grand = total.sum() / count.sum()
    between = float((count * (means - grand) ** 2).sum())
    within = float((squares - count * means**2).sum())
    return between / max(within, MIN_STD)
