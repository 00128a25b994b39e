"""Temperature scaling and calibration scores, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from pipeline.qa.calibration import (
    apply_temperature,
    brier,
    calibration_scores,
    expected_calibration_error,
    fit_temperature,
    neighbourhood,
    nll,
)


def _overconfident(n=20000, classes=3, seed=0):
    """Labels drawn from moderate true probabilities; the 'model' reports them sharpened by T = 1/3 (over-confident)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.0, (classes, n))
    truth = np.exp(logits) / np.exp(logits).sum(0)
    labels = np.array([rng.choice(classes, p=truth[:, i]) for i in range(n)])
    sharp = np.exp(3 * logits)
    return (sharp / sharp.sum(0)).astype(np.float32), labels


def test_temperature_scaling_lowers_nll_and_ece_of_an_overconfident_model_and_keeps_the_argmax():
    probabilities, labels = _overconfident()
    temperature = fit_temperature(probabilities, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)  # undoes the sharpening
    scaled = apply_temperature(probabilities, temperature)
    assert np.array_equal(scaled.argmax(0), probabilities.argmax(0))
    assert nll(scaled, labels) < 0.9 * nll(probabilities, labels)
    assert expected_calibration_error(scaled, labels) < 0.5 * expected_calibration_error(probabilities, labels)
    scores = calibration_scores(probabilities, labels, temperature)
    assert scores["brier_after"] < scores["brier_before"] and scores["temperature"] == temperature


def test_temperature_on_probabilities_equals_temperature_on_logits():
    logits = np.random.default_rng(1).normal(0, 2, (4, 50))
    softmax = lambda z: np.exp(z - z.max(0)) / np.exp(z - z.max(0)).sum(0)  # noqa: E731
    assert np.allclose(apply_temperature(softmax(logits).astype(np.float32), 2.5), softmax(logits / 2.5), atol=1e-5)


def test_scores_by_hand():
    probabilities = np.array([[0.9, 0.8, 0.3, 0.6], [0.1, 0.2, 0.7, 0.4]], np.float32)
    labels = np.array([0, 1, 1, 0])
    assert nll(probabilities, labels) == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.7, 0.6])), rel=1e-6)
    assert brier(probabilities, labels) == pytest.approx(np.mean([0.02, 1.28, 0.18, 0.32]), rel=1e-6)
    # class 0: bins of 0.9 (right, |1-0.9|), 0.8 (wrong, 0.8), 0.3 (wrong, 0.3), 0.6 (right, 0.4); class 1 mirrors it
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx(0.4, abs=1e-6)


def test_calibration_error_of_a_strided_array_is_binned_from_contiguous_rows(monkeypatch):
    """MONAI bins each class's row with ``torch.bucketize``, which copies a strided row and warns in every evaluate log."""
    bucketize = torch.bucketize

    def contiguous_only(values, boundaries, **kwargs):
        assert values.is_contiguous()
        return bucketize(values, boundaries, **kwargs)

    monkeypatch.setattr(torch, "bucketize", contiguous_only)
    strided = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32).T  # (C, N) view of (N, C)
    assert not strided.flags.c_contiguous
    assert expected_calibration_error(strided, np.array([0, 1, 1, 0]), bins=10) == pytest.approx(0.4, abs=1e-6)


def test_neighbourhood_is_the_foreground_and_a_margin_in_millimetres():
    truth, prediction = np.zeros((20, 20, 5), np.uint8), np.zeros((20, 20, 5), np.uint8)
    truth[10, 10, 2] = 1
    mask = neighbourhood(truth, prediction, spacing=(1.0, 1.0, 5.0), margin_mm=3.0)
    assert mask[10, 13, 2] and not mask[10, 14, 2] and mask[7, 10, 2]  # 3 voxels in-plane
    assert not mask[10, 10, 3]  # 5 mm slices: 3 mm reaches no neighbouring slice
    assert not neighbourhood(np.zeros_like(truth), prediction, (1, 1, 1)).any()


@pytest.mark.parametrize("spacing, margin_mm", [((1.0, 1.0, 2.0), 2.0), ((0.7376, 0.7376, 2.5), 4.0), ((1.3, 0.9, 3.97), 3.0)])
def test_neighbourhood_equals_a_dilation_by_the_ball_in_millimetres(spacing, margin_mm):
    rng = np.random.default_rng(3)
    truth = (rng.random((30, 26, 12)) > 0.995).astype(np.uint8)
    prediction = np.zeros_like(truth)
    prediction[0, 3, 11] = prediction[29, 25, 0] = 2  # at the array's corners: the grown box is clipped there
    radius = [int(margin_mm // s) for s in spacing]
    grid = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    ball = sum((g * s) ** 2 for g, s in zip(grid, spacing)) <= margin_mm**2 + 1e-9  # boundary points of 1 mm grids count
    expected = ndimage.binary_dilation((truth > 0) | (prediction > 0), structure=ball)
    np.testing.assert_array_equal(neighbourhood(truth, prediction, spacing, margin_mm), expected)
