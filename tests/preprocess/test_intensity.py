"""The foreground threshold on a bright background and the class separation behind the planned N4 choice."""

import numpy as np
import pytest

from pipeline.preprocess.intensity import class_moments, class_separation, foreground_threshold, otsu_threshold


def _bright_background_scan(rng: np.random.Generator, n: int = 64):
    """A uniform background tissue (150) filling 98 % of the view, Rician noise sigma 60, and a 2 % ball at 450."""
    distance = np.sqrt(((np.indices((n, n, n)) - n / 2) ** 2).sum(0))
    ball = distance < (0.02 * n**3 * 3 / (4 * np.pi)) ** (1 / 3)
    truth = np.where(ball, 450.0, 150.0)
    return np.hypot(truth + rng.normal(0, 60, truth.shape), rng.normal(0, 60, truth.shape)), ball


def test_a_bright_background_that_fills_the_view_is_not_split_by_otsu():
    scan, ball = _bright_background_scan(np.random.default_rng(0))
    # the background's peak is above the low fifth of the range, so the noise rule does not apply, and Otsu lands on
    # the background's flank: it keeps over a tenth of the background
    assert (scan[~ball] > otsu_threshold(scan)).mean() > 0.1
    threshold = foreground_threshold(scan)
    # where 98 % of N(150, 60) meets 2 % of N(450, 60): 300 (2x - 600) = 2 * 60**2 * ln(49), x = 347
    assert 320 < threshold < 400
    assert (scan[~ball] > threshold).mean() < 0.002
    assert (scan[ball] > threshold).mean() > 0.9


def test_otsu_is_kept_where_it_falls_in_a_valley():
    rng = np.random.default_rng(1)
    scan = np.concatenate([rng.normal(300, 20, 50_000), rng.normal(700, 20, 50_000)])  # two equal tissues, no noise floor
    assert foreground_threshold(scan) == otsu_threshold(scan)
    assert 340 < foreground_threshold(scan) < 660


def test_class_separation_is_fishers_ratio_worked_by_hand():
    volume = np.array([1.0, 3.0, 5.0, 7.0, 100.0])
    label = np.array([0, 0, 1, 1, 1])
    mask = np.array([True, True, True, True, False])
    moments = class_moments(volume, label, mask, 2)
    assert moments == [[2, 4.0, 10.0], [2, 12.0, 74.0]]
    # means 2 and 6 around 4: between 2*4 + 2*4 = 16; within 2 + 2 = 4
    assert class_separation(moments) == pytest.approx(4.0)
    # pooling two scans = summing their moments
    assert class_separation(np.add(moments, moments)) == pytest.approx(4.0)
    assert class_separation([[5, 10.0, 30.0], [0, 0.0, 0.0]]) == 0.0
