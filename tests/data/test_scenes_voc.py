"""Natural-image data: generated scenes (deterministic, VOC layout), the VOC reader, and preparation for the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import PipelineConfig, ScenesSettings
from pipeline.data.scenes import CLASSES, generate_scenes, voc_palette
from pipeline.data.voc import VOC_CLASSES, load_voc_pair, read_voc
from pipeline.errors import DatasetError, InvalidInputError
from pipeline.preprocess.natural import prepare_natural


def _scenes(root, **changes):
    return generate_scenes(ScenesSettings(out_dir=root, n_train=4, n_val=2, size=64, **changes))


def test_scenes_are_deterministic_in_voc_layout_with_class_and_instance_masks(tmp_path):
    first, second = _scenes(tmp_path / "a"), _scenes(tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 6 * 3 + 3  # jpg + class png + object png per image, two split lists, classes.txt
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert (first / "ImageSets/Segmentation/val.txt").read_text().split() == ["scene_00004", "scene_00005"]
    assert (first / "classes.txt").read_text().split() == list(CLASSES)
    seen = set()
    for image_id in (first / "ImageSets/Segmentation/train.txt").read_text().split():
        classes = Image.open(first / "SegmentationClass" / f"{image_id}.png")
        instances = np.asarray(Image.open(first / "SegmentationObject" / f"{image_id}.png"))
        assert classes.mode == "P" and classes.getpalette()[:6] == voc_palette()[:6]
        classes = np.asarray(classes)
        assert np.array_equal(classes > 0, instances > 0)
        for instance in np.unique(instances[instances > 0]):
            assert len(np.unique(classes[instances == instance])) == 1  # an instance has one class
        seen |= set(np.unique(classes).tolist())
    assert seen - {0}  # objects were drawn
    assert (
        _scenes(tmp_path / "c", seed=7).joinpath("JPEGImages/scene_00000.jpg").read_bytes()
        != (first / "JPEGImages/scene_00000.jpg").read_bytes()
    )


def _tiny_voc(root, ids=("2007_000001", "2007_000002"), label_mode="P"):
    for image_id in ids:
        rgb = np.full((20, 30, 3), 100, dtype=np.uint8)
        label = np.zeros((20, 30), dtype=np.uint8)
        label[5:10, 5:12] = 15  # person
        label[4, 4:13] = 255  # void border
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / "JPEGImages" / f"{image_id}.jpg", quality=100)
        png = Image.fromarray(label, mode="P") if label_mode == "P" else Image.fromarray(np.stack([label] * 3, -1))
        if label_mode == "P":
            png.putpalette(voc_palette())
        png.save(root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text(f"{ids[0]}\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids[1:]) + "\n")
    return root


def test_voc_reader_lists_splits_and_reads_palette_labels(tmp_path):
    dataset = read_voc(_tiny_voc(tmp_path / "VOC"))
    assert dataset.classes == VOC_CLASSES and len(VOC_CLASSES) == 21
    assert dataset.splits == {"train": ("2007_000001",), "val": ("2007_000002",)}
    image, label = load_voc_pair(dataset, "2007_000001")
    assert image.shape == (20, 30, 3) and label.shape == (20, 30)
    assert set(np.unique(label).tolist()) == {0, 15, 255} and (label[5:10, 5:12] == 15).all()


def test_voc_reader_reports_every_missing_file_and_bad_labels(tmp_path):
    root = _tiny_voc(tmp_path / "VOC", ids=("a", "b", "c"))
    (root / "JPEGImages" / "b.jpg").unlink()
    (root / "SegmentationClass" / "c.png").unlink()
    with pytest.raises(DatasetError) as missing:
        read_voc(root)
    assert "b.jpg" in str(missing.value) and "c.png" in str(missing.value) and "2 problem(s)" in str(missing.value)
    rgb_root = _tiny_voc(tmp_path / "RGB", label_mode="RGB")
    with pytest.raises(InvalidInputError, match=r"\[V3\] label PNG has mode RGB"):
        load_voc_pair(read_voc(rgb_root), "2007_000001")


def test_prepare_natural_writes_standardised_arrays_and_a_manifest(tmp_path):
    root = _tiny_voc(tmp_path / "VOC")
    cfg = PipelineConfig(natural={"root": root, "out_dir": tmp_path / "prepared"})
    manifest = json.loads(prepare_natural(cfg).read_text())
    assert manifest["modalities"] == ["red", "green", "blue"] and manifest["labels"]["15"] == "person"
    assert [(c["case_id"], c["split"]) for c in manifest["cases"]] == [("2007_000001", "train"), ("2007_000002", "test")]
    image = np.load(tmp_path / "prepared" / manifest["cases"][0]["image"])
    label = np.load(tmp_path / "prepared" / manifest["cases"][0]["label"])
    assert image.shape == (3, 30, 20, 1) and label.shape == (30, 20, 1)  # (channels, x = column, y = row, 1)
    jpeg = np.asarray(Image.open(root / "JPEGImages" / "2007_000001.jpg"))
    expected = (jpeg[0, 0, 0] / 255 - 0.485) / 0.229
    assert image[0, 0, 0, 0] == pytest.approx(expected, abs=1e-5)
    assert label[5, 5, 0] == 15 and label[5, 4, 0] == 0  # (x=5, y=5) person; the void border became background


def test_instances_are_read_checked_and_prepared_with_the_labels(tmp_path):
    from pipeline.data.instances import instances_from_maps
    from pipeline.data.voc import load_voc_instances

    root = _scenes(tmp_path / "scenes")
    cfg = PipelineConfig(natural={"root": root, "out_dir": tmp_path / "prepared"})
    manifest = json.loads(prepare_natural(cfg).read_text())
    entry = manifest["cases"][0]
    ids = np.load(tmp_path / "prepared" / entry["instances"])
    label = np.load(tmp_path / "prepared" / entry["label"])
    png = np.asarray(Image.open(root / "SegmentationObject" / f"{entry['case_id']}.png"))
    assert ids.shape == label.shape == (64, 64, 1) and np.array_equal(ids[:, :, 0], png.T)  # (x, y, 1) like the labels
    found = instances_from_maps(
        torch.from_numpy(ids[:, :, 0].astype(np.int64)), torch.from_numpy(label[:, :, 0].astype(np.int64))
    )
    assert len(found) == len(set(np.unique(png).tolist()) - {0})
    for mask, cls in zip(found.masks, found.labels):
        assert set(np.unique(label[:, :, 0][mask.numpy()]).tolist()) == {int(cls)}
    voc = read_voc(_tiny_voc(tmp_path / "VOC"))
    assert load_voc_instances(voc, "2007_000001", (20, 30)) is None  # no SegmentationObject/: semantic models only
    (voc.root / "SegmentationObject").mkdir()
    Image.fromarray(np.zeros((20, 31), np.uint8), mode="L").save(voc.instance_path("2007_000001"))
    with pytest.raises(InvalidInputError, match=r"2007_000001.*\[G1\] instance size \(20, 31\) differs from image"):
        load_voc_instances(voc, "2007_000001", (20, 30))


def test_voc_instance_void_borders_become_background_and_the_instance_keeps_its_class(tmp_path):
    from pipeline.data.instances import instances_from_maps

    root = _tiny_voc(tmp_path / "VOC")
    (root / "SegmentationObject").mkdir()
    for image_id in ("2007_000001", "2007_000002"):
        ids = np.zeros((20, 30), np.uint8)
        ids[5:10, 5:12] = 1  # the person of the class map
        ids[4, 4:13] = 255  # VOC's void border around objects
        png = Image.fromarray(ids, mode="P")
        png.putpalette(voc_palette())
        png.save(root / "SegmentationObject" / f"{image_id}.png")
    cfg = PipelineConfig(natural={"root": root, "out_dir": tmp_path / "prepared"})
    entry = json.loads(prepare_natural(cfg).read_text())["cases"][0]
    ids = np.load(tmp_path / "prepared" / entry["instances"])[:, :, 0]
    label = np.load(tmp_path / "prepared" / entry["label"])[:, :, 0]
    assert set(np.unique(ids).tolist()) == {0, 1}  # void 255 -> 0
    found = instances_from_maps(torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(label.astype(np.int64)))
    assert found.labels.tolist() == [15]  # person
    assert found.boxes.tolist() == [[5.0, 5.0, 12.0, 10.0]]  # (x1, y1, x2, y2): columns 5..11, rows 5..9
