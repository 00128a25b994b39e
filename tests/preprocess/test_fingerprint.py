"""The fingerprint's bias probe: N4 is planned where it makes the labelled classes more separable, and only there."""

import numpy as np

from pipeline.planning.planner import bias_correction_from_probe
from pipeline.preprocess.fingerprint import bias_correction_probe, bias_probe_moments

N = 48


def _rician(truth: np.ndarray, rng: np.random.Generator, sigma: float = 20.0) -> np.ndarray:
    return np.hypot(truth + rng.normal(0, sigma, truth.shape), rng.normal(0, sigma, truth.shape))


def _biased_head(rng: np.random.Generator):
    """Core (label 1, 250) inside a shell (label 2, 400), times a field brightening one side 1.6x."""
    distance = np.sqrt(((np.indices((N, N, N)) - N / 2) ** 2).sum(0))
    label = np.where(distance < 0.6 * 18, 1, np.where(distance < 18, 2, 0)).astype(np.uint8)
    truth = np.choose(label, [0.0, 250.0, 400.0])
    field = np.exp(0.47 * np.indices((N, N, N))[0] / (N - 1))
    return _rician(truth, rng) * field, label


def _intensity_blobs(rng: np.random.Generator):
    """Three separate balls told apart by intensity only (560, 700, 780) on a uniform background (200), no bias field."""
    label = np.zeros((N, N, N), np.uint8)
    grid = np.indices((N, N, N))
    for value in (1, 2, 3):
        centre = rng.uniform(12, N - 12, 3)
        label[np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0)) < 7] = value
    truth = np.choose(label, [200.0, 700.0, 780.0, 560.0]) * rng.uniform(0.7, 1.4)
    return _rician(truth, rng, 40.0), label


def _probe(make, cases: int = 2) -> list[dict]:
    rng = np.random.default_rng(0)
    per_case = []
    for _ in range(cases):
        scan, label = make(rng)
        moments = bias_probe_moments(scan[None].astype(np.float32), label, np.eye(4), (0, 0, 0), (N, N, N), 4)
        per_case.append({"bias_probe": moments})
    return bias_correction_probe(per_case + [{}], ("MR",))  # a case without a probe (past the cap) adds nothing


def test_the_probe_plans_n4_for_a_bias_field_and_not_for_structures_told_apart_by_intensity():
    (head,) = _probe(_biased_head)
    assert head["channel"] == "MR" and head["cases"] == 2 and head["n4"] > 1.2 * head["none"]
    assert bias_correction_from_probe([head], ("MR",)) == ("n4",)
    (blobs,) = _probe(_intensity_blobs)
    assert blobs["none"] > 2 * blobs["n4"]  # N4's smooth field fits, and flattens, the contrast between the balls
    # per channel, in order, even when two channels share a name
    assert bias_correction_from_probe([blobs, head], ("MR", "MR")) == ("none", "n4")
    # CT channels and channels without a probe keep nnU-Net's choice: no correction
    assert bias_correction_from_probe([head], ("CT", "T2")) == ("none", "none")
