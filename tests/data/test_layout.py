"""MSD and nnU-Net v2 raw layouts are read by one code path; missing files are all listed (F6)."""

from __future__ import annotations

import json

import pytest

from pipeline.data.layout import load_dataset
from pipeline.errors import DatasetError
from tests.conftest import make_label, make_volume, save, write_msd


def test_msd_layout_lists_cases_labels_and_modality(tiny_phantom):
    dataset = load_dataset(tiny_phantom)
    assert dataset.layout == "msd" and dataset.is_ct
    assert [label.name for label in dataset.labels.labels] == ["background", "liver", "spleen", "kidney"]
    assert len(dataset.split("train")) == 4 and len(dataset.split("test")) == 1 and len(dataset.split("unlabeled")) == 2
    assert all(c.label is not None for c in dataset.split("train") + dataset.split("test"))
    assert all(c.label is None for c in dataset.split("unlabeled"))


def test_msd_macos_resource_forks_are_ignored(tmp_path):
    root = write_msd(tmp_path / "Task09", {"spleen_1": (make_volume(), make_label())})
    (root / "imagesTr" / "._spleen_1.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    dataset = load_dataset(root)
    assert [c.case_id for c in dataset.cases] == ["spleen_1"]


def test_nnunet_v2_layout_with_two_channels(tmp_path):
    root = tmp_path / "Dataset001_Tiny"
    for case in ("a", "b"):
        for channel in (0, 1):
            save(root / "imagesTr" / f"{case}_{channel:04d}.nii.gz", make_volume())
        save(root / "labelsTr" / f"{case}.nii.gz", make_label())
    save(root / "imagesTs" / "c_0000.nii.gz", make_volume())
    save(root / "imagesTs" / "c_0001.nii.gz", make_volume())
    meta = {
        "channel_names": {"0": "MR", "1": "MR"},
        "labels": {"background": 0, "tumour": 1},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    dataset = load_dataset(root)
    assert dataset.layout == "nnunetv2" and not dataset.is_ct
    assert [(c.case_id, c.split, len(c.images)) for c in dataset.cases] == [
        ("a", "train", 2),
        ("b", "train", 2),
        ("c", "test", 2),
    ]
    assert dataset.cases[0].label.name == "a.nii.gz"
    assert dataset.labels.values == {0, 1}


def test_every_missing_or_orphaned_file_is_listed_in_one_error(tmp_path):
    root = write_msd(
        tmp_path / "ds",
        {"ok": (make_volume(), make_label()), "no_label": (make_volume(), None), "no_image": (None, make_label())},
    )
    save(root / "labelsTr" / "stray.nii.gz", make_label())
    with pytest.raises(DatasetError) as err:
        load_dataset(root)
    text = str(err.value)
    assert str(root / "labelsTr" / "no_label.nii.gz") in text
    assert str(root / "imagesTr" / "no_image.nii.gz") in text
    assert str(root / "labelsTr" / "stray.nii.gz") in text
    assert len(err.value.problems) == 3
    assert {p.code for p in err.value.problems} == {"F6"}


def test_missing_dataset_json_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="missing dataset.json"):
        load_dataset(tmp_path)


def test_an_msd_entry_without_label_is_named_by_key_and_position(tmp_path):
    root = write_msd(tmp_path / "ds", {"a": (make_volume(), make_label()), "b": (make_volume(), make_label())})
    meta = json.loads((root / "dataset.json").read_text())
    del meta["training"][1]["label"]
    meta["test"] = [{"no_image": "x"}]
    (root / "dataset.json").write_text(json.dumps(meta))
    dataset = load_dataset(root, strict=False)
    messages = sorted(p.line() for p in dataset.problems if p.code == "F2")
    assert messages == [
        f"{root / 'dataset.json'}: error [F2] test[0] {{'no_image': 'x'}} has no 'image' path",
        f"{root / 'dataset.json'}: error [F2] training[1] {{'image': './imagesTr/b.nii.gz'}} has no 'label' path",
    ]
    assert [c.case_id for c in dataset.cases] == ["a"]


def test_a_case_id_in_both_training_and_test_sets_is_test_leakage(tmp_path):
    root = tmp_path / "Dataset002_Leak"
    for case in ("a", "b"):
        save(root / "imagesTr" / f"{case}_0000.nii.gz", make_volume())
        save(root / "labelsTr" / f"{case}.nii.gz", make_label())
    save(root / "imagesTs" / "b_0000.nii.gz", make_volume())
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1, "y": 2}, "numTraining": 2, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError) as leaked:
        load_dataset(root)
    (problem,) = leaked.value.problems
    assert (problem.code, problem.case, problem.path) == ("F9", "b", str(root / "imagesTs" / "b_0000.nii.gz"))
    assert "test leakage" in problem.message and str(root / "imagesTr" / "b_0000.nii.gz") in problem.message


@pytest.mark.parametrize("layout", ["msd", "nnunetv2"])
def test_declared_label_ids_with_a_gap_are_refused_naming_the_missing_ids(tmp_path, layout):
    """Row V9: {0, 1, 3} would train and score a class 2 that does not exist; verify lists it with every other problem."""
    from pipeline.config import VerifySettings
    from pipeline.data.verify import verify_dataset

    root = write_msd(tmp_path / "ds", {"a": (make_volume(), make_label())})
    meta = json.loads((root / "dataset.json").read_text())
    if layout == "msd":
        meta["labels"] = {"0": "background", "1": "liver", "3": "tumour"}
    else:
        (root / "imagesTr" / "a.nii.gz").rename(root / "imagesTr" / "a_0000.nii.gz")
        meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumour": 3}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError) as err:
        load_dataset(root)
    assert [(p.code, p.path) for p in err.value.problems] == [("V9", str(root / "dataset.json"))]
    assert "declares [0, 1, 3], missing [2]" in str(err.value)
    (root / "dataset.json").write_text(json.dumps({**meta, "labels": {}}))
    with pytest.raises(DatasetError, match=r"declares \[\], missing \[0\]"):
        load_dataset(root)
    (root / "dataset.json").write_text(json.dumps(meta))
    stray = root / "labelsTr" / "stray.nii.gz"
    save(stray, make_label())
    report = verify_dataset(root, VerifySettings())
    assert {(p.code, p.path) for p in report.errors} >= {("V9", str(root / "dataset.json")), ("F6", str(stray))}
    meta["labels"] = (
        {"0": "background", "1": "liver", "2": "tumour"} if layout == "msd" else {"background": 0, "liver": 1, "tumour": 2}
    )
    (root / "dataset.json").write_text(json.dumps(meta))
    stray.unlink()
    assert load_dataset(root).labels.values == {0, 1, 2}


def test_a_region_based_nnunet_dataset_loads_with_its_regions_and_a_bad_label_is_named(tmp_path):
    """Row V10: regions load (their values are what the maps hold); nnU-Net's ignore label is refused by name."""
    root = tmp_path / "Dataset137_Tiny"
    save(root / "imagesTr" / "a_0000.nii.gz", make_volume())
    save(root / "labelsTr" / "a.nii.gz", make_label())
    labels = {"background": 0, "sc": [1, 2], "lesion": 2}
    meta = {"channel_names": {"0": "T2"}, "labels": labels, "regions_class_order": [1, 2], "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    dataset = load_dataset(root)
    names = [(lab.value, lab.name) for lab in dataset.labels.labels]
    assert names == [(0, "background"), (1, "sc without lesion"), (2, "lesion")]
    assert [(r.name, r.values) for r in dataset.regions] == [("sc", (1, 2)), ("lesion", (2,))]
    (root / "dataset.json").write_text(json.dumps({**meta, "labels": {**labels, "ignore": 3}}))
    with pytest.raises(DatasetError) as err:
        load_dataset(root)
    assert [(p.code, p.path) for p in err.value.problems] == [("V10", str(root / "dataset.json"))]
    assert "'labels': label 'ignore'" in str(err.value)
