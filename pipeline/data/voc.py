"""Pascal VOC layout: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG of class indices, 255 =
void), optional ``SegmentationObject/<id>.png`` (instance ids 1..N, 255 = void), ``ImageSets/Segmentation/{train,val}.txt``;
optional ``classes.txt`` (one name per line, background first), otherwise VOC's 21 classes. Used for real VOC folders
and for the generated scenes alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DatasetError, InvalidInputError, Problem

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
SPLITS = ("train", "val")


@dataclass(frozen=True)
class VocDataset:
    """A VOC-layout folder: class names and the image ids of each split."""

    root: Path
    classes: tuple[str, ...]
    splits: dict[str, tuple[str, ...]]

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def instance_path(self, image_id: str) -> Path:
        return self.root / "SegmentationObject" / f"{image_id}.png"


def read_voc(root: Path) -> VocDataset:
    """List a VOC-layout folder and check that every listed image has its JPEG and its label PNG.

    Raises:
        DatasetError: no split list, or missing files (all of them listed).
    """
    root = Path(root)
    lists = {split: root / "ImageSets" / "Segmentation" / f"{split}.txt" for split in SPLITS}
    if not lists["train"].is_file():
        raise DatasetError(
            [Problem(str(lists["train"]), "F6", "error", "missing: a VOC folder needs ImageSets/Segmentation/train.txt")]
        )
    splits = {split: tuple(_ids(path)) for split, path in lists.items() if path.is_file()}
    classes_file = root / "classes.txt"
    classes = (
        tuple(line.strip() for line in classes_file.read_text().splitlines() if line.strip())
        if classes_file.is_file()
        else VOC_CLASSES
    )
    dataset = VocDataset(root, classes, splits)
    problems = [
        Problem(str(path), "F6", "error", f"listed in {split}.txt but missing", image_id)
        for split, ids in splits.items()
        for image_id in ids
        for path in (dataset.image_path(image_id), dataset.label_path(image_id))
        if not path.is_file()
    ]
    if problems:
        raise DatasetError(problems, f"VOC folder {root} is incomplete")
    return dataset


def _ids(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def load_voc_pair(dataset: VocDataset, image_id: str, void_label: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Read one image and its label.

    Returns:
        (uint8 RGB (H, W, 3), uint8 class indices (H, W) with ``void_label`` kept as is).

    Raises:
        InvalidInputError: unreadable file, an RGB (not palette or grey) label, size mismatch, or class values
            outside the class list (other than ``void_label``).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = np.asarray(Image.open(dataset.image_path(image_id)).convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidInputError(dataset.image_path(image_id), f"unreadable image ({exc})", image_id, "F2") from None
    label = _index_png(dataset.label_path(image_id), image_id, image.shape[:2], "label")
    bad = sorted(set(np.unique(label).tolist()) - set(range(len(dataset.classes))) - {void_label})
    if bad:
        raise InvalidInputError(
            dataset.label_path(image_id), f"class values {bad} beyond the {len(dataset.classes)} classes", image_id, "V4"
        )
    return image, label


def load_voc_instances(dataset: VocDataset, image_id: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The instance ids (H, W) uint8 of ``SegmentationObject/<id>.png`` (0 = none, 255 = void), or ``None`` when the
    folder has no instance mask for this image.

    Raises:
        InvalidInputError: unreadable, RGB or differently sized instance PNG.
    """
    path = dataset.instance_path(image_id)
    return _index_png(path, image_id, shape, "instance") if path.is_file() else None


def _index_png(path: Path, image_id: str, shape: tuple[int, int], kind: str) -> np.ndarray:
    """A palette or grey PNG of indices (``kind``: "label" = class indices, "instance" = instance ids), checked
    against the image's size: the one reader of VOC's index PNGs."""
    what = "class indices" if kind == "label" else "instance ids"
    from PIL import Image, UnidentifiedImageError

    try:
        png = Image.open(path)
        png.load()
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidInputError(path, f"unreadable {kind} PNG ({exc})", image_id, "F2") from None
    if png.mode not in ("P", "L"):
        reason = f"{kind} PNG has mode {png.mode}; VOC {kind}s are palette (P) or grey (L) images of {what}"
        raise InvalidInputError(path, reason, image_id, "V3")
    array = np.asarray(png)
    if array.shape != tuple(shape):
        raise InvalidInputError(path, f"{kind} size {array.shape} differs from image {tuple(shape)}", image_id, "G1")
    return array
