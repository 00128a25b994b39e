"""DeepLab v1's dense CRF: noisy probabilities snap to the image's colour edges."""

from __future__ import annotations

import numpy as np

from pipeline.inference.crf import dense_crf
from tests.conftest import crf_available, require_optional


def test_dense_crf_recovers_a_region_from_noisy_probabilities():
    require_optional("pydensecrf2", crf_available(), "crf")
    truth = np.zeros((40, 60), dtype=np.int64)
    truth[10:30, 15:45] = 1
    image = np.where(truth[..., None] == 1, [200, 40, 40], [30, 90, 200]).astype(np.uint8)
    rng = np.random.default_rng(0)
    foreground = np.clip(0.5 + 0.25 * (truth - 0.5) * 2 + rng.normal(0, 0.3, truth.shape), 0.01, 0.99)
    probabilities = np.stack([1 - foreground, foreground]).astype(np.float32)
    before = (probabilities.argmax(0) == truth).mean()
    refined = dense_crf(image, probabilities)
    after = (refined.argmax(0) == truth).mean()
    assert refined.shape == probabilities.shape and np.allclose(refined.sum(0), 1.0, atol=1e-4)
    assert before < 0.85 and after > 0.98, (before, after)
