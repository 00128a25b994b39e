"""The one way the pipeline lists the labels in a map: equal to np.unique for every dtype and memory order."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.labels import Region, labels_and_regions, present_values


@pytest.mark.parametrize("values", [[0, 3, 7, 60], [0, 3, 7, 200]])  # a span tested value by value, and one counted
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float32, np.float64])
def test_present_values_equal_np_unique_in_c_and_fortran_order_and_on_views(dtype, values):
    rng = np.random.default_rng(0)
    volume = rng.choice(np.array(values, dtype=np.int64), size=(30, 20, 10), p=[0.7, 0.1, 0.1, 0.1]).astype(dtype)
    for array in (volume, np.asfortranarray(volume), volume[2:25, ::2, ::-1], volume.transpose(2, 0, 1)):
        assert present_values(array) == [int(v) for v in np.unique(array)]
        assert all(type(v) is int for v in present_values(array))


def test_negative_and_wide_ranges_and_empty_arrays():
    assert present_values(np.array([[-5, 2], [2, -5]], dtype=np.int16)) == [-5, 2]
    assert present_values(np.array([0, 10**9], dtype=np.int64)) == [0, 10**9]  # wider than a label map: np.unique
    assert present_values(np.zeros((0, 3), dtype=np.uint8)) == []
    assert present_values(np.full((4, 4), 65535, dtype=np.uint16)) == [65535]


def test_a_value_between_the_extremes_that_is_absent_is_not_listed():
    volume = np.zeros((5, 6, 7), dtype=np.uint8, order="F")
    volume[0, 0, 0], volume[1, 2, 3] = 5, 2  # 1, 3 and 4 lie inside the span and are absent
    assert present_values(volume) == [0, 2, 5]
    assert present_values(volume[1:, 2:, 3:]) == [0, 2]


BRATS_REGIONS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}


def test_region_based_labels_train_their_values_named_by_the_regions_that_nest_them():
    """nnU-Net v2's BraTS dataset.json: the maps hold 1 (edema), 2 (non-enhancing core) and 3 (enhancing); each
    value is named by its regions, and the regions keep their values."""
    mapping, regions = labels_and_regions(BRATS_REGIONS)
    assert mapping == {
        0: "background",
        1: "whole tumor without tumor core",
        2: "tumor core without enhancing tumor",
        3: "enhancing tumor",
    }
    assert regions == (Region("whole tumor", (1, 2, 3)), Region("tumor core", (2, 3)), Region("enhancing tumor", (3,)))
    mapping, regions = labels_and_regions({"background": 0, "sc": [1, 2], "lesion": 2})  # spinal cord and its lesion
    assert mapping == {0: "background", 1: "sc without lesion", 2: "lesion"} and len(regions) == 2
    mapping, _ = labels_and_regions({"background": 0, "a": [1, 2], "b": [2, 3]})  # overlapping, not nested
    assert mapping == {0: "background", 1: "label 1", 2: "label 2", 3: "label 3"}


def test_plain_labels_have_no_regions_and_keep_their_names():
    assert labels_and_regions({"background": 0, "liver": 1, "tumour": 2}) == ({0: "background", 1: "liver", 2: "tumour"}, ())


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"background": 0, "tumour": 1, "ignore": 2}, "'ignore' .* is not supported"),
        ({"background": 0, "everything": [0, 1]}, r"may not hold background \(0\): \['everything'\]"),
        ({"background": 0, "tumour": "1"}, r"label 'tumour': '1' is not a non-negative integer"),
        ({"background": 0, "tumour": [1, -2]}, r"label 'tumour': \[1, -2\] is not"),
        ({"background": 0, "tumour": []}, r"label 'tumour': \[\] is not"),
    ],
)
def test_unusable_label_declarations_are_refused_naming_the_label(declared, message):
    with pytest.raises(ValueError, match=message):
        labels_and_regions(declared)
