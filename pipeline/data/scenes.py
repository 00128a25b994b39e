"""Generated natural scenes, written in the Pascal VOC layout (the default data of the natural-image track).

Each image has a textured background (smooth colour gradients, blotches and stripes) and several
objects of four classes, each with its own shape and texture: ``disc`` (a filled circle, concentric
rings), ``box`` (a rotated rectangle, checkerboard), ``triangle`` (diagonal stripes) and ``star``
(five points, speckles). Objects vary in scale, colour and rotation and occlude each other (later
ones are drawn on top). Written like VOC: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``
and ``SegmentationObject/<id>.png`` (palette PNGs; instance ids in draw order),
``ImageSets/Segmentation/{train,val}.txt`` and ``classes.txt``. Every image has its own seed, so
the dataset is the same for the same settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import ScenesSettings
from pipeline.io_utils import atomic_path

CLASSES = ("background", "disc", "box", "triangle", "star")


def voc_palette(count: int = 256) -> list[int]:
    """The Pascal VOC colour map (bit-interleaved), as a flat RGB list for a palette PNG."""
    palette = []
    for index in range(count):
        r = g = b = 0
        value = index
        for shift in range(8):
            r |= ((value >> 0) & 1) << (7 - shift)
            g |= ((value >> 1) & 1) << (7 - shift)
            b |= ((value >> 2) & 1) << (7 - shift)
            value >>= 3
        palette += [r, g, b]
    return palette


def generate_scenes(settings: ScenesSettings) -> Path:
    """Write ``settings.n_train + settings.n_val`` scenes into ``settings.out_dir`` (VOC layout); returns the folder."""
    root = Path(settings.out_dir)
    ids = {"train": [f"scene_{i:05d}" for i in range(settings.n_train)]}
    ids["val"] = [f"scene_{settings.n_train + i:05d}" for i in range(settings.n_val)]
    for split_ids in ids.values():
        for image_id in split_ids:
            seed = int(np.random.SeedSequence([settings.seed, int(image_id.split("_")[1])]).generate_state(1)[0])
            image, classes, instances = render_scene(np.random.default_rng(seed), settings.size, settings.max_objects)
            _write_scene(root, image_id, image, classes, instances)
    for split, split_ids in ids.items():
        with atomic_path(root / "ImageSets" / "Segmentation" / f"{split}.txt") as tmp:
            tmp.write_text("\n".join(split_ids) + "\n")
    with atomic_path(root / "classes.txt") as tmp:
        tmp.write_text("\n".join(CLASSES) + "\n")
    return root


def render_scene(rng: np.random.Generator, size: int, max_objects: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: (uint8 RGB image (H, W, 3), class map (H, W), instance map (H, W))."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = _background(rng, rows, cols)
    classes = np.zeros((size, size), dtype=np.uint8)
    instances = np.zeros((size, size), dtype=np.uint8)
    for instance in range(1, int(rng.integers(2, max_objects + 1)) + 1):
        label = int(rng.integers(1, len(CLASSES)))
        mask = _shape(rng, label, rows, cols)
        if mask.sum() < 20:
            continue
        image[mask] = _texture(rng, label, rows, cols)[mask]
        classes[mask] = label
        instances[mask] = instance
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), classes, instances


def _background(rng, rows, cols) -> np.ndarray:
    base = rng.uniform(40, 200, 3)
    gradient = rng.uniform(-60, 60, (2, 3))
    image = base + rows[..., None] * gradient[0] + cols[..., None] * gradient[1]
    for _ in range(int(rng.integers(3, 7))):  # soft blotches
        centre, radius = rng.uniform(0, 1, 2), rng.uniform(0.1, 0.4)
        weight = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * radius**2))
        image += weight[..., None] * rng.uniform(-50, 50, 3)
    if rng.random() < 0.5:  # background stripes
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.05, 0.2)
        stripes = np.sin((rows * np.cos(angle) + cols * np.sin(angle)) * 2 * np.pi / period)
        image += stripes[..., None] * rng.uniform(5, 20)
    return image


def _shape(rng, label: int, rows, cols) -> np.ndarray:
    centre, scale, angle = rng.uniform(0.15, 0.85, 2), rng.uniform(0.06, 0.22), rng.uniform(0, np.pi)
    dy, dx = rows - centre[0], cols - centre[1]
    u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
    if label == 1:  # disc
        return dx**2 + dy**2 < scale**2
    if label == 2:  # box (aspect up to 2:1)
        return (np.abs(u) < scale) & (np.abs(v) < scale * rng.uniform(0.5, 1.0))
    radius, theta = np.hypot(u, v), np.arctan2(v, u)
    if label == 3:  # triangle: inside three half-planes
        return radius * np.cos((theta % (2 * np.pi / 3)) - np.pi / 3) < scale * 0.6
    star = scale * (0.55 + 0.45 * np.cos(5 * theta))  # star with five points
    return radius < star


def _texture(rng, label: int, rows, cols) -> np.ndarray:
    colour, contrast = rng.uniform(30, 225, 3), rng.uniform(30, 70)
    if label == 1:  # concentric rings
        pattern = np.sin(np.hypot(rows - rows.mean(), cols - cols.mean()) * rng.uniform(60, 120))
    elif label == 2:  # checkerboard
        period = rng.uniform(0.03, 0.06)
        pattern = np.sign(np.sin(rows * np.pi / period) * np.sin(cols * np.pi / period))
    elif label == 3:  # diagonal stripes
        pattern = np.sign(np.sin((rows + cols) * np.pi / rng.uniform(0.02, 0.04)))
    else:  # speckles
        pattern = rng.choice([-1.0, 1.0], size=rows.shape, p=[0.7, 0.3])
    return colour + pattern[..., None] * contrast


def _write_scene(root: Path, image_id: str, image: np.ndarray, classes: np.ndarray, instances: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(root / "JPEGImages" / f"{image_id}.jpg") as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=95)
    for folder, array in (("SegmentationClass", classes), ("SegmentationObject", instances)):
        png = Image.fromarray(array, mode="P")
        png.putpalette(voc_palette())
        with atomic_path(root / folder / f"{image_id}.png") as tmp:
            png.save(tmp, format="PNG")
