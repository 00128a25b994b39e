"""Checked reading of a case: one file per channel (nnU-Net v2) or every channel in one 4D file (multi-modal MSD)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.layout import load_dataset
from pipeline.errors import InvalidInputError
from pipeline.preprocess.reading import read_case
from tests.conftest import make_label, make_volume, write_multimodal_msd


def _two_channels(shape=(12, 10, 8)) -> np.ndarray:
    t2 = make_volume(shape).astype(np.float32)
    adc = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)  # a ramp: any mix-up of axes or channels shows
    return np.stack([t2, adc], axis=-1)


def test_a_multimodal_msd_image_is_split_into_its_channels_in_modality_order(tmp_path):
    image = _two_channels()
    root = write_multimodal_msd(tmp_path / "Task05", {"prostate_00": (image, make_label())})
    dataset = load_dataset(root)
    (case,) = dataset.cases
    assert dataset.modalities == ("T2", "ADC") and case.packed_channels == 2 and len(case.images) == 1
    read, affine, label = read_case(case, set(dataset.labels.values))
    assert read.shape == (2, 12, 10, 8)
    assert np.array_equal(read[0], image[..., 0]) and np.array_equal(read[1], image[..., 1])
    assert np.array_equal(label, make_label()) and np.allclose(affine, np.diag([1.5, 1.5, 3.0, 1.0]))


@pytest.mark.parametrize("shape", [(12, 10, 8), (12, 10, 8, 3)])
def test_a_multimodal_msd_image_with_the_wrong_channel_count_names_file_case_and_shape(tmp_path, shape):
    image = np.zeros(shape, np.float32)
    root = write_multimodal_msd(tmp_path / "Task05", {"prostate_00": (image, make_label())})
    (case,) = load_dataset(root).cases
    with pytest.raises(InvalidInputError) as caught:
        read_case(case, {0, 1, 2})
    message = str(caught.value)
    assert "prostate_00.nii.gz" in message and "(case prostate_00)" in message and "[G8]" in message
    assert f"got shape {shape}" in message and "(x, y, z, 2)" in message
