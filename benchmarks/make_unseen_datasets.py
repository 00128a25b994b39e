"""Small nnU-Net v2 raw datasets unlike the phantoms, for end-to-end runs of the planned defaults on data they were
not tuned on (the sweep in ``benchmarks/RESULTS.md``, issue 11).

Each dataset is a few ellipsoid "organs" of random intensity in a noisy background, seeded:

* ``slab``: CT (int16, HU-like), 96 x 80 x 3 slices at 0.8 x 0.8 x 5 mm (2D-like), LPS, 2 labels;
* ``many``: MR, 48 x 56 x 40 at 1.5 mm, PIL, 6 labels, label 6 missing from a third of the cases;
* ``small``: MR, 24 x 20 x 16 at 2 mm, 4 training cases, 1 label;
* ``multi``: two channels named ``T2`` and ``ADC`` (the second int16), ``.nii`` files, case ids with dots, LPI, 3 labels;
* ``aniso``: MR, 120 x 120 x 12 at 0.6 x 0.6 x 6 mm, LAS, 3 labels of about 1,000 voxels each, two of them close in
  intensity (the CPU defaults reached test Dice 0.52 on it with N4 always on, 0.87 once the bias probe left N4 off);
* ``hippo``: MR, 36 x 50 x 36 at 1 mm, RAS, 60 training and 10 test cases (shaped like MSD's hippocampus task: many
  small crops of brain tissue), 2 labels of equal intensity, the front and back halves of one ellipsoid, so only
  position inside the structure tells them apart;
* ``prostate``: two MR channels (``T2``, ``ADC``), 192 x 192 x 20 at 0.75 x 0.75 x 3.6 mm, LPS, 24 training and 4 test
  cases (shaped like MSD's prostate task): a body in air (a Rician noise floor), a gland whose inner part is label 2
  and whose back half of the rest is label 1, a crescent around it;
* ``spleen``: CT (int16), 512 x 512 slices, each case with its own spacing (0.65-0.95 mm in-plane; 1.5, 2.5 or 5 mm
  slices over 180-260 mm), LPS, 16 training and 4 test cases (shaped like MSD's spleen task): a body in air with fat,
  muscle, spine, liver and kidneys; label 1 is the spleen, 20 HU brighter than the liver, at the left back;
* ``liver``: the ``spleen`` kind's abdomens (16 training and 4 test cases), labelled like MSD's liver task: label 1 is
  the liver, label 2 one to three hypodense lesions inside it (6-18 mm radius, 25-45 HU darker than the liver), so one
  class is large and the other small and inside it;
* ``abdomen_mr``: the same abdomens as T2-weighted MR (shaped like CHAOS's T2-SPIR task): 256 x 256 slices at
  1.4-1.9 mm in-plane and 5.5-9 mm apart, each case with its own spacing, Rician noise, a random gain and a smooth
  bias field, 16 training and 4 test cases; labels liver 1, right kidney 2, left kidney 3, spleen 4 (the kidneys
  are one tissue, told apart by side only).
* ``tumour``: a brain tumour set with nnU-Net v2's region-based labels (like its BraTS conversion): two MR channels
  (``FLAIR``, ``T1c``), 96 x 112 x 80 at 1.5 mm, LPS, 16 training and 4 test cases; a head in air with a bias
  field, a random gain per channel and Rician noise; label 1 the edema, 2 the necrotic core, 3 the enhancing rim
  around it; ``dataset.json`` declares the regions ``whole tumor`` [1, 2, 3], ``tumor core`` [2, 3] and
  ``enhancing tumor`` 3.
* ``organs``: the ``spleen`` kind's CT abdomens labelled like a multi-organ task (BTCV, AMOS): liver 1, spleen 2,
  ``kidney (right)`` 3, ``kidney (left)`` 4 (names with parentheses, as such datasets write them), and four small
  structures drawn over them: gallbladder 5 (fluid, 15 HU), pancreas 6 (80 HU, near the bowel's 40), aorta 7 (a
  22 mm tube through every slice) and adrenal glands 8 (two 10 x 24 x 28 mm ellipsoids, a few hundred voxels at 5 mm
  slices).
* ``lung``: the ``spleen`` kind's 512 x 512 CT grids cut higher, through the chest (shaped like MSD's lung task): a body
  with two lungs (-850 HU) crossed by vessels (40 HU tubes of 1.5-4 mm radius running head to foot and branching
  sideways), and label 1 one or two solid nodules (40 HU spheres of 5-15 mm radius) in the lungs, so the one class is
  small, has the vessels' intensity and is told apart by shape.

MR images are Rician (the magnitude of complex Gaussian noise around the tissue value) with a random per-scan scale.

Usage: python benchmarks/make_unseen_datasets.py OUT_DIR KIND [--seed 0]; then point ``data.root`` at OUT_DIR (or let
``run_unseen.py KIND`` make a fresh project, run ``dvc repro`` there and collect the figures).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np

KINDS = {
    "slab": dict(shape=(96, 80, 3), spacing=(0.8, 0.8, 5.0), labels=2, modality="CT", n=8, n_test=2, codes="LPS"),
    "many": dict(shape=(48, 56, 40), spacing=(1.5, 1.5, 1.5), labels=6, modality="MR", n=8, n_test=2, codes="PIL"),
    "small": dict(shape=(24, 20, 16), spacing=(2.0, 2.0, 2.0), labels=1, modality="MR", n=4, n_test=1, codes="RAS"),
    "multi": dict(shape=(40, 44, 36), spacing=(1.2, 1.2, 1.6), labels=3, modality="MR", n=6, n_test=2, codes="LPI"),
    "aniso": dict(shape=(120, 120, 12), spacing=(0.6, 0.6, 6.0), labels=3, modality="MR", n=8, n_test=2, codes="LAS"),
    "prostate": dict(shape=(192, 192, 20), spacing=(0.75, 0.75, 3.6), labels=2, modality="MR", n=24, n_test=4, codes="LPS"),
    "spleen": dict(shape=(512, 512, 0), spacing=(0, 0, 0), labels=1, modality="CT", n=16, n_test=4, codes="LPS"),
    "hippo": dict(shape=(36, 50, 36), spacing=(1.0, 1.0, 1.0), labels=2, modality="MR", n=60, n_test=10, codes="RAS"),
    "liver": dict(shape=(512, 512, 0), spacing=(0, 0, 0), labels=2, modality="CT", n=16, n_test=4, codes="LPS"),
    "abdomen_mr": dict(shape=(256, 256, 0), spacing=(0, 0, 0), labels=4, modality="MR", n=16, n_test=4, codes="LPS"),
    "tumour": dict(shape=(96, 112, 80), spacing=(1.5, 1.5, 1.5), labels=3, modality="MR", n=16, n_test=4, codes="LPS"),
    "organs": dict(shape=(512, 512, 0), spacing=(0, 0, 0), labels=8, modality="CT", n=16, n_test=4, codes="LPS"),
    "lung": dict(shape=(512, 512, 0), spacing=(0, 0, 0), labels=1, modality="CT", n=16, n_test=4, codes="LPS"),
}
ORGAN_LABELS = {  # organs: label value, HU (portal phase); drawn in this order over liver, kidneys, spleen
    "gallbladder": (5, 15.0), "pancreas": (6, 80.0), "aorta": (7, 180.0), "adrenal glands": (8, 30.0),
}  # fmt: skip
ORGAN_NAMES = {"background": 0, "liver": 1, "spleen": 2, "kidney (right)": 3, "kidney (left)": 4}
TUMOUR_TISSUE = {  # (FLAIR, T1c) before gain: head, brain, edema, necrotic core, enhancing rim
    "scalp": (350.0, 500.0), "brain": (300.0, 400.0), "edema": (620.0, 340.0), "necrosis": (450.0, 200.0),
    "enhancing": (520.0, 850.0),
}  # fmt: skip
TUMOUR_REGIONS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
CT_TISSUE = {"air": -1000.0, "fat": -100.0, "muscle": 40.0, "spine": 500.0, "liver": 100.0, "kidney": 160.0, "spleen": 120.0}
MR_TISSUE = {"air": 0.0, "fat": 700.0, "muscle": 250.0, "spine": 150.0, "liver": 320.0, "kidney": 650.0, "spleen": 520.0}


def grid_mm(shape, spacing) -> tuple[np.ndarray, np.ndarray]:
    """``(grid, extent)``: every voxel's position in mm from the first voxel, shape ``(*shape, 3)``, and the grid's
    extent in mm."""
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    return grid, np.array(shape) * np.array(spacing)


def ellipsoids(shape, spacing, present: set[int], rng: np.random.Generator) -> np.ndarray:
    """A label map with one ellipsoid per class in ``present`` (later classes drawn over earlier ones); on a grid of
    three slices or fewer the ellipsoids are cylinders through every slice."""
    grid, extent = grid_mm(shape, spacing)
    axes = 2 if min(shape) <= 3 else 3
    label = np.zeros(shape, np.uint8)
    for value in sorted(present):
        centre = extent * rng.uniform(0.3, 0.7, 3)
        radius = extent * rng.uniform(0.08, 0.18, 3)
        inside = (((grid[..., :axes] - centre[:axes]) / radius[:axes]) ** 2).sum(-1) < 1
        label[inside] = value
    return label


def halved_ellipsoid(shape, spacing, rng: np.random.Generator) -> np.ndarray:
    """One ellipsoid elongated along the second axis, labelled 1 in front of its centre and 2 behind it."""
    grid, extent = grid_mm(shape, spacing)
    centre = extent * rng.uniform(0.4, 0.6, 3)
    radius = extent * np.array([rng.uniform(0.12, 0.2), rng.uniform(0.25, 0.35), rng.uniform(0.12, 0.2)])
    inside = (((grid - centre) / radius) ** 2).sum(-1) < 1
    return np.where(inside, np.where(grid[..., 1] < centre[1], 1, 2), 0).astype(np.uint8)


def gland(shape, spacing, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(label, body)``: an elliptic body cylinder through every slice and, inside it, an ellipsoid gland whose inner
    60 % is label 2 and whose remaining shell is label 1 behind the gland's centre (second axis)."""
    grid, extent = grid_mm(shape, spacing)
    body = (((grid[..., :2] - extent[:2] / 2) / (extent[:2] * rng.uniform(0.38, 0.46, 2))) ** 2).sum(-1) < 1
    centre = extent * np.array([rng.uniform(0.45, 0.55), rng.uniform(0.5, 0.6), rng.uniform(0.4, 0.6)])
    radius = np.array([rng.uniform(18, 26), rng.uniform(14, 20), rng.uniform(14, 22)])
    distance = (((grid - centre) / radius) ** 2).sum(-1)
    label = np.where(distance < 0.36, 2, np.where((distance < 1) & (grid[..., 1] > centre[1]), 1, 0))
    return label.astype(np.uint8), body


def abdomen(rng: np.random.Generator, kind: str = "spleen") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, label, affine)`` of one case of ``kind`` on its own grid (see the module docstring): ``spleen`` and
    ``liver`` in HU as int16 (a seed gives both one body: the liver's lesions are drawn after it), ``abdomen_mr`` as
    float32 (tissue values times gain and bias, with Rician noise; four organ labels)."""
    mr = kind == "abdomen_mr"
    if mr:
        inplane, thickness, matrix = rng.uniform(1.4, 1.9), rng.uniform(5.5, 9.0), 256
    else:
        inplane, thickness, matrix = rng.uniform(0.65, 0.95), rng.choice([1.5, 2.5, 5.0], p=[0.2, 0.3, 0.5]), 512
    shape = (matrix, matrix, int(rng.uniform(180, 260) / thickness))
    spacing = np.array([inplane, inplane, thickness])
    grid, extent = grid_mm(shape, spacing)
    centre = extent / 2 + np.array([*rng.uniform(-10, 10, 2), 0])
    half_axes = np.array([rng.uniform(150, 175), rng.uniform(110, 130)])  # the body's half axes (mm), left-right wider

    def ellipsoid(offset_mm, radii_mm, axes=3):
        where = centre + np.asarray(offset_mm) + rng.uniform(-8, 8, 3)
        return (((grid[..., :axes] - where[:axes]) / np.asarray(radii_mm)[:axes]) ** 2).sum(-1) < 1

    tissue = MR_TISSUE if mr else CT_TISSUE
    body_radius = (((grid[..., :2] - centre[:2]) / half_axes) ** 2).sum(-1)
    image = np.full(shape, tissue["air"])
    image[body_radius < 1] = tissue["fat"]
    image[body_radius < 0.8] = tissue["muscle"]  # and bowel
    image[ellipsoid([0, 70, 0], [18, 18, 1], axes=2)] = tissue["spine"]
    liver = ellipsoid([-75, 5, 20], [rng.uniform(70, 90), 70, 80])
    image[liver] = tissue["liver"]  # patient's right (the first axis runs to the left)
    kidneys = [ellipsoid([side * 60, 55, -30], [25, 30, 50]) for side in (-1, 1)]  # right, left
    for kidney in kidneys:
        image[kidney] = tissue["kidney"]
    spleen = ellipsoid([rng.uniform(80, 95), rng.uniform(35, 50), 30], rng.uniform([25, 40, 45], [35, 55, 65]))
    image[spleen] = tissue["spleen"]
    if mr:
        label = np.select([spleen, kidneys[1], kidneys[0], liver], [4, 3, 2, 1], 0).astype(np.uint8)
        image = rician(image * bias_field(grid, extent, rng) * rng.uniform(0.5, 2.0), rng.uniform(20, 40), rng)
    else:
        if kind == "lung":
            label = chest(grid, centre, body_radius, image, rng)
        elif kind == "organs":
            label = small_organs(image, [liver, *kidneys, spleen], ellipsoid, rng)
        elif kind == "liver":
            label = liver_with_lesions(grid, liver, image, rng)
        else:
            label = spleen.astype(np.uint8)
        image = (image + rng.normal(0, rng.uniform(15, 30), shape)).astype(np.int16)
    return image, label, affine_lps(shape, spacing, rng)


def affine_lps(shape, spacing, rng: np.random.Generator) -> np.ndarray:
    """An LPS affine of ``spacing`` with a random origin."""
    affine = nib.orientations.inv_ornt_aff(nib.orientations.axcodes2ornt(("L", "P", "S")), shape) @ np.diag([*spacing, 1])
    affine[:3, 3] += rng.uniform(-50, 50, 3)
    return affine


def small_organs(image: np.ndarray, large: list[np.ndarray], ellipsoid, rng) -> np.ndarray:
    """The label map of one ``organs`` case, drawing its small organs into ``image`` (as :func:`liver_with_lesions`
    draws lesions): the abdomen's liver, spleen and kidneys (labels 1-4) and, over them, a gallbladder under the liver,
    a pancreas across the midline (80 HU beside the bowel's 40), an aorta in front of the spine through every slice
    and two adrenal glands above the kidneys (5 x 12 x 14 mm half axes)."""
    label = np.zeros(image.shape, np.uint8)
    for value, where in zip((1, 3, 4, 2), large):  # the drawing order of ``abdomen``: liver, kidneys, spleen
        label[where] = value
    shapes = {
        "gallbladder": [ellipsoid([-55, -30, -15], [15, 14, 28])],
        "pancreas": [ellipsoid([20, 25, 5], [rng.uniform(50, 65), 10, 13])],
        "aorta": [ellipsoid([-5, 45, 0], [11, 11, 1], axes=2)],
        "adrenal glands": [ellipsoid([side * 50, 50, 35], [5, 12, 14]) for side in (-1, 1)],
    }
    for name, masks in shapes.items():
        value, hu = ORGAN_LABELS[name]
        for mask in masks:
            image[mask], label[mask] = hu, value
    return label


def chest(grid, centre, body_radius, image: np.ndarray, rng) -> np.ndarray:
    """The label map of one ``lung`` case, drawing a chest into ``image`` (HU, in place) over the abdomen's organs
    (the lungs cover what they overlap): two lungs, vessels through them (tubes along the third axis and sideways
    branches) and one or two nodules (label 1) centred in a lung."""
    lungs = np.zeros(image.shape, bool)
    for side in (-1, 1):
        where = centre + np.array([side * rng.uniform(65, 80), rng.uniform(-5, 5), 0])
        radii = np.array([rng.uniform(50, 60), rng.uniform(70, 85)])
        lungs |= (((grid[..., :2] - where[:2]) / radii) ** 2).sum(-1) < 1
    lungs &= body_radius < 0.8
    image[lungs] = -850.0
    inside = np.flatnonzero(lungs)
    vessels = np.zeros(image.shape, bool)
    for _ in range(int(rng.integers(8, 14))):
        start = grid.reshape(-1, 3)[inside[rng.integers(len(inside))]]
        axes = [0, 1] if rng.uniform() < 0.6 else [1, 2]  # along the body's long axis, or a branch across it
        vessels |= ((grid[..., axes] - start[axes]) ** 2).sum(-1) < rng.uniform(1.5, 4.0) ** 2
    image[vessels & lungs] = CT_TISSUE["muscle"]
    label = np.zeros(image.shape, np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        radius = rng.uniform(5, 15)
        middle = grid.reshape(-1, 3)[inside[rng.integers(len(inside))]]
        nodule = lungs & ((((grid - middle) ** 2).sum(-1)) < radius**2)
        image[nodule], label[nodule] = CT_TISSUE["muscle"], 1
    return label


def brain_tumour(shape, spacing, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """``([FLAIR, T1c], label)`` of one ``tumour`` case: a head, an edema around a core whose outer shell enhances."""
    grid, extent = grid_mm(shape, spacing)
    head_centre = extent / 2 + rng.uniform(-5, 5, 3)
    head = (((grid - head_centre) / rng.uniform([60, 74, 54], [66, 80, 58])) ** 2).sum(-1)
    centre = head_centre + rng.uniform(-0.4, 0.4, 3) * np.array([45, 55, 35])
    edema = (((grid - centre) / rng.uniform(14, 24, 3)) ** 2).sum(-1) < 1
    core = (((grid - centre - rng.uniform(-3, 3, 3)) / rng.uniform(6, 11, 3)) ** 2).sum(-1)
    label = np.select([core < 0.45, core < 1, edema], [2, 3, 1], 0).astype(np.uint8)
    tissue = np.select([head >= 1, head >= 0.8, label == 0, label == 1, label == 2], [0, 1, 2, 3, 4], 5)
    bias = bias_field(grid, extent, rng)
    channels = []
    for channel in range(2):
        values = np.array([0.0, *(TUMOUR_TISSUE[k][channel] for k in ("scalp", "brain", "edema", "necrosis", "enhancing"))])
        channels.append(rician(values[tissue] * bias * rng.uniform(0.6, 1.6), rng.uniform(15, 30), rng))
    return channels, label


def bias_field(grid: np.ndarray, extent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field (a receive coil's sensitivity): exp of a random linear ramp (at most +-0.53 at a
    corner of the field of view) plus a random quadratic bowl (0 at the centre, at most 0.48 at a corner)."""
    position = grid / extent - 0.5
    ramp = position @ rng.uniform(-0.35, 0.35, 3)
    bowl = ((position * rng.uniform(-0.8, 0.8, 3)) ** 2).sum(-1)
    return np.exp(ramp + bowl)


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """The magnitude of ``signal`` plus complex Gaussian noise of ``sigma`` per channel, stored as ``dtype``."""
    return np.abs(signal + rng.normal(0, sigma, signal.shape) + 1j * rng.normal(0, sigma, signal.shape)).astype(dtype)


def liver_with_lesions(grid, liver: np.ndarray, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Label 1 the liver, label 2 one to three spherical lesions centred on liver voxels (clipped to the liver), drawn
    into ``image`` (HU, in place) 25-45 HU below the liver's 100 HU. ``grid``: every voxel's position in mm."""
    label = liver.astype(np.uint8)
    inside = np.flatnonzero(liver)
    for _ in range(int(rng.integers(1, 4))):
        radius = rng.uniform(6, 18)
        centre = grid.reshape(-1, 3)[inside[rng.integers(len(inside))]]
        lesion = liver & ((((grid - centre) ** 2).sum(-1)) < radius**2)
        image[lesion] = CT_TISSUE["liver"] - rng.uniform(25, 45)
        label[lesion] = 2
    return label


def make_dataset(root: Path, kind: str, seed: int = 0) -> Path:
    """Write dataset ``kind`` (see the module docstring) as an nnU-Net v2 raw folder under ``root``."""
    spec = KINDS[kind]
    rng = np.random.default_rng(seed)
    shape, spacing, ending = spec["shape"], spec["spacing"], ".nii" if kind == "multi" else ".nii.gz"
    affine = nib.orientations.inv_ornt_aff(nib.orientations.axcodes2ornt(tuple(spec["codes"])), shape)
    affine = affine @ np.diag([*spacing, 1.0])
    affine[:3, 3] += rng.uniform(-50, 50, 3)
    means = rng.uniform(200, 900, spec["labels"] + 1)
    if kind == "hippo":  # one tissue, darker surroundings: the two labels differ only in where they lie
        means = np.array([350.0, 600.0, 600.0])
    if kind == "prostate":  # T2: peripheral zone brighter than the transition zone, both above the body's tissue
        means = np.array([400.0, 800.0, 550.0])
    for split, count in (("Tr", spec["n"]), ("Ts", spec["n_test"])):
        (root / f"images{split}").mkdir(parents=True, exist_ok=True)
        (root / f"labels{split}").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            present = set(range(1, spec["labels"] + 1)) - ({6} if kind == "many" and index % 3 == 0 else set())
            body = None
            if kind in ("spleen", "liver", "abdomen_mr", "organs", "lung"):
                case = f"{kind}_{split.lower()}{index:03d}"
                image, label, own_affine = abdomen(rng, kind)
                nib.save(nib.Nifti1Image(image, own_affine), root / f"images{split}" / f"{case}_0000{ending}")
                nib.save(nib.Nifti1Image(label, own_affine), root / f"labels{split}" / f"{case}{ending}")
                continue
            if kind == "tumour":
                case = f"{kind}_{split.lower()}{index:03d}"
                channels, label = brain_tumour(shape, spacing, rng)
                for channel, image in enumerate(channels):
                    nib.save(nib.Nifti1Image(image, affine), root / f"images{split}" / f"{case}_{channel:04d}{ending}")
                nib.save(nib.Nifti1Image(label, affine), root / f"labels{split}" / f"{case}{ending}")
                continue
            if kind == "hippo":
                label = halved_ellipsoid(shape, spacing, rng)
            elif kind == "prostate":
                label, body = gland(shape, spacing, rng)
            else:
                label = ellipsoids(shape, spacing, present, rng)
            if spec["modality"] == "CT":
                tissue = np.where(label > 0, means[label] - 900, 40.0)
                image = (tissue + rng.normal(0, 20, shape)).astype(np.int16)
            else:
                image = rician(means[label] * (body if body is not None else 1) * rng.uniform(0.5, 2.0), 60, rng)
            case = f"{kind}.v1_{split.lower()}{index:03d}" if kind == "multi" else f"{kind}_{split.lower()}{index:03d}"
            nib.save(nib.Nifti1Image(image, affine), root / f"images{split}" / f"{case}_0000{ending}")
            if kind == "multi":
                second = (np.sqrt(np.abs(image)) * 10).astype(np.int16)
                nib.save(nib.Nifti1Image(second, affine), root / f"images{split}" / f"{case}_0001{ending}")
            if kind == "prostate":  # ADC (int16): peripheral zone high, transition zone low, noise of its own
                adc = np.where(label == 1, 1800.0, np.where(label == 2, 1100.0, 1400.0)) * body
                second = rician(adc, 120, rng, np.int16)
                nib.save(nib.Nifti1Image(second, affine), root / f"images{split}" / f"{case}_0001{ending}")
            nib.save(nib.Nifti1Image(label, affine), root / f"labels{split}" / f"{case}{ending}")
    channels = {"0": "T2", "1": "ADC"} if kind in ("multi", "prostate") else {"0": spec["modality"]}
    labels = {"background": 0, **{f"class{k}": k for k in range(1, spec["labels"] + 1)}}
    if kind == "abdomen_mr":
        labels = {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}
    if kind == "lung":
        labels = {"background": 0, "cancer": 1}
    if kind == "organs":
        labels = {**ORGAN_NAMES, **{name: value for name, (value, _) in ORGAN_LABELS.items()}}
    meta = {"channel_names": channels, "labels": labels, "numTraining": spec["n"], "file_ending": ending, "name": kind}
    if kind == "tumour":
        meta.update(channel_names={"0": "FLAIR", "1": "T1c"}, labels=TUMOUR_REGIONS, regions_class_order=[1, 2, 3])
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {make_dataset(args.out, args.kind, args.seed)}")


if __name__ == "__main__":
    main()
