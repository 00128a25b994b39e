"""Largest-component postprocessing and the decision rule, on label maps built by hand."""

from __future__ import annotations

import numpy as np

from pipeline.inference.postprocess import (
    FOREGROUND,
    ObjectCounts,
    PostprocessingDecision,
    apply_postprocessing,
    common_postprocessing,
    decide_postprocessing,
    mean_dice_per_region,
    object_count,
    object_counts,
)


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


def test_object_counts_are_the_fewest_components_holding_95_percent_when_every_training_label_agrees():
    _, truth = _case()  # class 1 one cube (1000 voxels), class 2 a pair of 216-voxel cubes, foreground three pieces
    assert object_count(truth == 1) == 1 and object_count(truth == 2) == 2 and object_count(truth > 0) == 3
    island = truth.copy()
    island[30:33, 15:18, 15:18] = 1  # 27 voxels beside class 1's 1000: 1000 / 1027 = 0.974 >= 0.95, still one object
    bigger = truth.copy()
    bigger[30:35, 14:19, 14:19] = 1  # 125 voxels: 1000 / 1125 = 0.889, so two objects; the foreground 1432 + 125:
    # the three largest hold (1000 + 216 + 216) / 1557 = 0.920, the four 1.0
    absent = np.where(truth == 2, 0, truth).astype(np.uint8)  # no class 2 at all: says nothing about class 2
    assert object_counts([truth, island], 3) == ObjectCounts(3, {1: 1, 2: 2})  # with the island, 1432 / 1459 >= 0.95
    assert object_counts([truth, bigger], 3) == ObjectCounts(0, {2: 2})  # class 1 and the foreground disagree
    assert object_counts([absent, truth], 3) == ObjectCounts(0, {1: 1, 2: 2})
    assert ObjectCounts(3, {2: 2, 1: 1}).to_json() == {"foreground": 3, "classes": {"1": 1, "2": 2}}


def test_a_structure_of_more_than_max_objects_has_no_count():
    lesions = np.zeros((40, 6, 6), dtype=bool)
    lesions[0:40:8, 2:4, 2:4] = True  # five equal lesions: none holds more than 20 %
    assert object_count(lesions) is None
    assert object_counts([lesions.astype(np.uint8)], 2) == ObjectCounts(0, {})


def test_a_pair_keeps_its_two_components_and_loses_its_islands():
    prediction, truth = _case()
    prediction[10:12, 15:17, 15:17] = 2  # a false island of the pair's class
    decision = decide_postprocessing([prediction], [truth], 3, ObjectCounts(0, {1: 1, 2: 2}))
    assert decision == PostprocessingDecision(False, (1, 2), ((2, 2),))
    assert np.array_equal(apply_postprocessing(prediction, decision), truth)
    assert decision.to_json()["components_kept"] == {"2": 2}
    assert PostprocessingDecision.from_json(decision.to_json()) == decision
    written_before = {"largest_component_foreground": False, "largest_component_classes": [1]}
    assert PostprocessingDecision.from_json(written_before).kept(1) == 1


def test_an_ensemble_keeps_only_the_steps_every_member_decided_alike():
    pair = PostprocessingDecision.keeping(True, (1, 2), {FOREGROUND: 3, 2: 2})
    single = PostprocessingDecision.keeping(True, (2, 3), {FOREGROUND: 3, 2: 1})
    assert pair.to_json()["components_kept"] == {"foreground": 3, "2": 2}
    assert PostprocessingDecision.from_json(pair.to_json()) == pair
    assert common_postprocessing([pair, pair]) == pair
    assert common_postprocessing([pair, single]) == PostprocessingDecision(True, (), ((FOREGROUND, 3),))


def test_a_step_is_tried_only_for_structures_that_are_one_object_in_the_training_labels():
    """Held-out cases where the two classes touch, with a false island: the foreground step helps there, but when the
    training labels show the classes apart (foreground not one object), it is not tried; class 1's step still is."""
    truth = np.zeros((30, 20, 20), dtype=np.uint8)
    truth[2:12, 2:12, 2:12] = 1
    truth[12:16, 2:12, 2:12] = 2  # touching class 1
    prediction = truth.copy()
    prediction[25:28, 15:18, 15:18] = 1  # a false island of class 1
    assert decide_postprocessing([prediction], [truth], 3) == PostprocessingDecision(True, ())
    apart = ObjectCounts(0, {1: 1, 2: 1})
    assert decide_postprocessing([prediction], [truth], 3, apart) == PostprocessingDecision(False, (1,))
    assert decide_postprocessing([prediction], [truth], 3, ObjectCounts(0, {2: 1})) == PostprocessingDecision(False, ())


def _reference_postprocessing(label: np.ndarray, decision: PostprocessingDecision) -> np.ndarray:
    """The rule written plainly: label the whole map, keep the largest component (first in raster order on ties)."""
    from scipy import ndimage

    def largest(mask):
        components, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
        if count <= 1:
            return mask
        sizes = [(components == k).sum() for k in range(1, count + 1)]
        return components == 1 + int(np.argmax(sizes))

    out = label.copy()
    if decision.foreground:
        out[~largest(out > 0)] = 0
    for value in decision.classes:
        out[(out == value) & ~largest(out == value)] = 0
    return out


def test_postprocessing_in_bounding_boxes_equals_labelling_the_whole_map():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for trial in range(6):
        noise = ndimage.gaussian_filter(rng.normal(size=(30, 26, 18)), 1.5)
        label = np.digitize(noise, np.quantile(noise, [0.55, 0.75, 0.9])).astype(np.uint8)  # islands of classes 1..3
        decisions = (
            PostprocessingDecision(True, ()),
            PostprocessingDecision(False, (1, 3)),
            PostprocessingDecision(True, (2, 3)),
        )
        for decision in decisions:
            expected = _reference_postprocessing(label, decision)
            assert np.array_equal(apply_postprocessing(label, decision), expected)
            assert trial or not np.array_equal(expected, label)  # the step really removed islands


def test_postprocessing_of_a_2d_map_uses_8_connectivity():
    label = np.zeros((6, 6), dtype=np.uint8)
    label[0:2, 0:2] = 1
    label[2, 2] = 1  # touches the block at a corner: the same component in 2D
    label[5, 5] = 1  # an island
    out = apply_postprocessing(label, PostprocessingDecision(False, (1,)))
    assert out[2, 2] == 1 and out[5, 5] == 0
    assert apply_postprocessing(label, PostprocessingDecision(False, ())) is label


def test_a_tie_between_equal_components_is_broken_the_same_way_in_either_memory_order():
    label = np.zeros((12, 10, 8), dtype=np.uint8)
    label[7:10, 1:4, 1:4] = 1  # 27 voxels, first in raster (x, y, z) order: (7, 1, 1)
    label[1:4, 5:8, 4:7] = 1  # 27 voxels, first in raster order: (1, 5, 4), so this one is kept
    label[1, 1, 1] = 2  # another class
    decision = PostprocessingDecision(False, (1,))
    expected = label.copy()
    expected[7:10, 1:4, 1:4] = 0
    for layout in (label, np.asfortranarray(label)):
        out = apply_postprocessing(layout, decision)
        assert np.array_equal(out, expected)
        assert out.flags.f_contiguous == layout.flags.f_contiguous  # the mask keeps its memory order


def test_mean_dice_per_region_averages_each_regions_dice_over_cases():
    """Two cases of one nested structure (values 1 around 2): in the second, value 2 is predicted as 1, so region
    {1, 2} stays exact and region {2} scores 0 there (mean 0.5); with no regions, nothing is reported."""
    from pipeline.data.labels import Region

    truth = np.zeros((10, 10, 10), dtype=np.uint8)
    truth[1:9, 1:9, 1:9] = 1
    truth[3:6, 3:6, 3:6] = 2
    missed = np.where(truth == 2, 1, truth).astype(np.uint8)
    regions = (Region("outer", (1, 2)), Region("inner", (2,)))
    scores = mean_dice_per_region([truth, missed], [truth, truth], regions)
    assert scores == {"dice_region outer": 1.0, "dice_region inner": 0.5, "dice_regions_mean": 0.75}
    assert mean_dice_per_region([truth], [truth], ()) == {}
