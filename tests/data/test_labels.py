"""The one way the pipeline lists the labels in a map: equal to np.unique for every dtype and memory order."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.labels import present_values


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
