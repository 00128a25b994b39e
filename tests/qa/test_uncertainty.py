"""Entropy and mutual information of ensemble members, and per-organ boundary scores."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.qa.uncertainty import MemberStats, boundary_band, entropy, organ_uncertainty


def test_entropy_is_zero_where_members_agree_with_certainty_and_log_c_where_uniform():
    certain = np.zeros((3, 4, 4, 2), np.float32)
    certain[1] = 1.0
    uniform = np.full((3, 4, 4, 2), 1 / 3, np.float32)
    stats = MemberStats()
    for _ in range(3):
        stats.add(certain)
    assert np.array_equal(entropy(stats.mean), np.zeros((4, 4, 2)))
    assert np.allclose(entropy(uniform), np.log(3), atol=1e-6)


def test_mutual_information_is_zero_for_identical_members_and_log_2_for_two_confident_opposites():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=(5, 5, 3)).transpose(3, 0, 1, 2).astype(np.float32)
    same = MemberStats()
    same.add(p)
    same.add(p)
    assert np.allclose(same.mutual_information(), 0.0, atol=1e-6)
    a, b = np.zeros((2, 3, 3, 3), np.float32), np.zeros((2, 3, 3, 3), np.float32)
    a[0], b[1] = 1.0, 1.0
    opposite = MemberStats()
    opposite.add(a)
    opposite.add(b)
    assert np.allclose(opposite.mutual_information(), np.log(2), atol=1e-6)  # all uncertainty is disagreement


def test_organ_scores_average_inside_and_on_the_boundary_band():
    label = np.zeros((12, 12, 12), np.uint8)
    label[3:9, 3:9, 3:9] = 1
    entropy_map = np.zeros((12, 12, 12), np.float32)
    band = boundary_band(label == 1, voxels=2)
    entropy_map[band] = 0.5
    scores = organ_uncertainty(entropy_map, label, {1: "liver", 2: "spleen"})
    inside = label == 1
    assert scores["liver"]["entropy_boundary"] == pytest.approx(0.5)
    assert scores["liver"]["entropy_inside"] == pytest.approx(0.5 * (band & inside).sum() / inside.sum())
    assert scores["spleen"] == {"entropy_inside": 0.0, "entropy_boundary": 0.0}
    assert band[5, 5, 1] and band[5, 5, 4] and not band[5, 5, 5] and not band[5, 5, 0]
