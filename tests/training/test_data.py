"""Patch sampling is a pure function of (seed, epoch, index), foreground-oversampled, 2.5D-aware."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import AugmentSettings
from pipeline.errors import InvalidInputError
from pipeline.training.augment import build_augmentation
from pipeline.training.data import CaseArrays, PatchDataset, crop_with_padding, load_case, read_manifest, split_train_val


def _case(seed=0) -> CaseArrays:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(1, 30, 24, 12)).astype(np.float32)
    label = np.zeros((30, 24, 12), dtype=np.uint8)
    label[3:6, 4:7, 2:4] = 1
    label[20:22, 15:17, 8:9] = 2
    return CaseArrays("c", image, label, {v: np.argwhere(label == v).astype(np.int32) for v in (1, 2)})


def test_same_seed_epoch_index_gives_the_same_patch_and_epochs_differ():
    ds = PatchDataset([_case()], (8, 8, 4), 0, 0.5, 10, seed=7)
    a = ds[3]
    assert torch.equal(a["image"], ds[3]["image"]) and torch.equal(a["label"], ds[3]["label"])
    ds.set_epoch(1)
    assert not torch.equal(a["image"], ds[3]["image"])


def test_full_foreground_fraction_centres_every_patch_on_a_labelled_voxel():
    ds = PatchDataset([_case()], (5, 5, 3), 0, 1.0, 40, seed=1)
    centres = [ds[i]["label"][0, 2, 2, 1].item() for i in range(40)]
    assert all(c > 0 for c in centres)
    assert {1, 2} <= set(centres)  # classes are sampled in balance, so the small one appears too


def test_2d_patches_stack_neighbouring_slices_as_channels():
    case = _case()
    case.image[0] = np.arange(1, 13, dtype=np.float32)[None, None, :]  # voxel value = slice index + 1
    ds = PatchDataset([case], (8, 8), 1, 1.0, 20, seed=2)
    for i in range(20):
        sample = ds[i]
        assert sample["image"].shape == (3, 8, 8) and sample["label"].shape == (1, 8, 8)
        centre = sample["image"][1][sample["image"][1] > 0].unique()
        assert len(centre) == 1  # one axial slice per channel
        z = int(centre.item()) - 1
        below, above = sample["image"][0].max().item(), sample["image"][2].max().item()
        assert below == (z if z > 0 else 0) and above == (z + 2 if z < 11 else 0)  # zero outside the volume
        assert sample["label"][0, 4, 4].item() > 0 and case.label[:, :, z].max() > 0  # label = the centre slice


def test_crop_with_padding_pads_outside_the_volume_with_zeros():
    array = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    out = crop_with_padding(array, np.array([-1, 2]), (3, 3))
    assert out.tolist() == [[0, 0, 0], [3, 4, 0], [7, 8, 0]]


def test_augmentation_is_reproducible_per_seed_and_keeps_labels_integer():
    augment = build_augmentation(
        AugmentSettings(affine_prob=1.0, elastic_prob=1.0, flip_axes=(0,), gamma_prob=1.0, noise_prob=1.0), 3
    )
    sample = PatchDataset([_case()], (16, 16, 8), 0, 1.0, 2, seed=0)[0]
    a, b, c = augment(dict(sample), 5), augment(dict(sample), 5), augment(dict(sample), 6)
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])
    assert a["label"].dtype == torch.int64 and set(a["label"].unique().tolist()) <= {0, 1, 2}
    assert a["image"].shape == sample["image"].shape


def test_split_is_seeded_disjoint_and_needs_enough_cases(tiny_preprocessed):
    manifest = read_manifest(tiny_preprocessed)
    train, val = split_train_val(manifest.split("train"), 1, seed=0)
    again = split_train_val(list(reversed(manifest.split("train"))), 1, seed=0)
    assert [c["case_id"] for c in val] == [c["case_id"] for c in again[1]]
    assert len(val) == 1 and not {c["case_id"] for c in train} & {c["case_id"] for c in val}
    with pytest.raises(InvalidInputError, match="need more than train.val_cases=4"):
        split_train_val(manifest.split("train"), 4, seed=0)
    case = load_case(manifest, train[0])
    assert case.image.dtype == np.float32 and case.label.shape == case.image.shape[1:]
    assert all((case.label[tuple(idx.T)] == value).all() for value, idx in case.foreground.items())


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(InvalidInputError, match="dataset.json.*segpipe preprocess"):
        read_manifest(tmp_path)


def test_instance_ids_are_cropped_and_augmented_with_the_labels():
    """Mask R-CNN's targets come from the instance map after augmentation: it must move exactly as the class map."""
    rng = np.random.default_rng(0)
    label = np.zeros((48, 40, 1), np.uint8)
    ids = np.zeros_like(label)
    label[5:20, 8:30], ids[5:20, 8:30] = 2, 1
    label[25:45, 4:18], ids[25:45, 4:18] = 3, 2
    label[30:40, 25:38], ids[30:40, 25:38] = 3, 3  # two instances of one class
    image = rng.normal(size=(3, 48, 40, 1)).astype(np.float32)
    case = CaseArrays("c", image, label, {2: np.argwhere(label == 2)}, ids)
    augment = build_augmentation(AugmentSettings(affine_prob=1.0, rotate_degrees=30, flip_axes=[0, 1], flip_prob=0.5), 2)
    dataset = PatchDataset([case], (32, 32), 0, 0.5, 12, seed=4, transform=augment)
    for index in range(len(dataset)):
        sample = dataset[index]
        classes, instances = sample["label"][0], sample["instances"][0]
        assert instances.dtype == torch.int64 and instances.shape == classes.shape == (32, 32)
        assert torch.equal(classes > 0, instances > 0)  # same pixels moved: resampled by the same nearest-neighbour map
        for instance, expected in ((1, 2), (2, 3), (3, 3)):
            assert set(classes[instances == instance].tolist()) <= {expected}


def test_an_elastic_transform_whose_coin_says_no_is_skipped_with_bit_identical_output():
    from monai.transforms import Rand2DElasticd

    from pipeline.training.augment import _SkipWhenNotDrawn

    kwargs = {"prob": 0.4, "spacing": (20, 20), "magnitude_range": (0, 100), "mode": ("bilinear", "nearest")}
    plain = Rand2DElasticd(["image", "label"], **kwargs)
    skipping = _SkipWhenNotDrawn(Rand2DElasticd, ["image", "label"], **kwargs)
    image, label = torch.randn(3, 40, 32), torch.randint(0, 3, (1, 40, 32)).float()
    applied = 0
    for seed in range(30):
        expected = plain.set_random_state(seed)({"image": image, "label": label})
        got = skipping.set_random_state(seed)({"image": image, "label": label})
        applied += not torch.equal(torch.as_tensor(expected["image"]), image)
        for key in ("image", "label"):
            assert torch.equal(torch.as_tensor(got[key]), torch.as_tensor(expected[key]))
    assert 5 <= applied <= 20  # both branches were exercised


def test_prefetched_keeps_the_order_raises_the_threads_error_at_its_item_and_stops_when_left():
    from pipeline.training.data import prefetched

    assert list(prefetched(range(50), depth=3)) == list(range(50)) == list(prefetched(range(50), depth=0))

    def failing():
        yield from (0, 1)
        raise InvalidInputError(Path("case_7.nii.gz"), "broken")

    got = []
    with pytest.raises(InvalidInputError, match="case_7"):
        for item in prefetched(failing(), depth=2):
            got.append(item)
    assert got == [0, 1]

    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    stream = prefetched(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # leaving the loop joins the thread: nothing is produced afterwards
    count = len(produced)
    assert count <= 3 + 2 + 1 and len(produced) == count
