"""Largest-component postprocessing and the decision rule, on label maps built by hand."""

from __future__ import annotations

import numpy as np

from pipeline.inference.postprocess import PostprocessingDecision, apply_postprocessing, decide_postprocessing


def _case():
    """Class 1: one organ plus a false island (the largest component helps). Class 2: a true pair of blobs
    (the largest component deletes a true half)."""
    truth = np.zeros((40, 20, 20), dtype=np.uint8)
    truth[2:12, 2:12, 2:12] = 1
    truth[20:26, 2:8, 2:8] = 2
    truth[32:38, 2:8, 2:8] = 2
    prediction = truth.copy()
    prediction[2:5, 15:18, 15:18] = 1  # a false island of class 1
    return prediction, truth


def test_apply_keeps_only_the_largest_component_of_the_chosen_classes():
    prediction, truth = _case()
    out = apply_postprocessing(prediction, PostprocessingDecision(False, (1,)))
    assert np.array_equal(out, truth)
    both = apply_postprocessing(prediction, PostprocessingDecision(False, (1, 2)))
    assert (both == 2).sum() == (truth == 2).sum() // 2  # one of the pair is gone
    everything = apply_postprocessing(prediction, PostprocessingDecision(True, ()))
    assert (everything > 0).sum() == (truth == 1).sum()  # only the largest foreground component (class 1) is left


def test_decision_keeps_the_step_for_the_class_it_helps_and_not_for_the_class_it_hurts():
    prediction, truth = _case()
    decision = decide_postprocessing([prediction], [truth], 3)
    assert decision == PostprocessingDecision(False, (1,))
    assert PostprocessingDecision.from_json(decision.to_json()) == decision
