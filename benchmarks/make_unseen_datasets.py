"""Small nnU-Net v2 raw datasets unlike the phantoms, for end-to-end runs of the planned defaults on data they were
not tuned on (the sweep in ``benchmarks/RESULTS.md``, issue 11).

Each dataset is a few ellipsoid "organs" of random intensity in a noisy background, seeded:

* ``slab``: CT (int16, HU-like), 96 x 80 x 3 slices at 0.8 x 0.8 x 5 mm (2D-like), LPS, 2 labels;
* ``many``: MR, 48 x 56 x 40 at 1.5 mm, PIL, 6 labels, label 6 missing from a third of the cases;
* ``small``: MR, 24 x 20 x 16 at 2 mm, 4 training cases, 1 label;
* ``multi``: two channels named ``T2`` and ``ADC`` (the second int16), ``.nii`` files, case ids with dots, LPI, 3 labels;
* ``aniso``: MR, 120 x 120 x 12 at 0.6 x 0.6 x 6 mm, LAS, 3 labels of about 1,000 voxels each, two of them close in
  intensity (the CPU defaults reached test Dice 0.52 on it with N4 always on, 0.87 once the bias probe left N4 off).

MR images are Rician (the magnitude of complex Gaussian noise around the tissue value) with a random per-scan scale.

Usage: python benchmarks/make_unseen_datasets.py OUT_DIR KIND [--seed 0]; then point ``data.root`` at OUT_DIR.
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
}


def ellipsoids(shape, spacing, present: set[int], rng: np.random.Generator) -> np.ndarray:
    """A label map with one ellipsoid per class in ``present`` (later classes drawn over earlier ones); on a grid of
    three slices or fewer the ellipsoids are cylinders through every slice."""
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    extent = np.array(shape) * np.array(spacing)
    axes = 2 if min(shape) <= 3 else 3
    label = np.zeros(shape, np.uint8)
    for value in sorted(present):
        centre = extent * rng.uniform(0.3, 0.7, 3)
        radius = extent * rng.uniform(0.08, 0.18, 3)
        inside = (((grid[..., :axes] - centre[:axes]) / radius[:axes]) ** 2).sum(-1) < 1
        label[inside] = value
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
    for split, count in (("Tr", spec["n"]), ("Ts", spec["n_test"])):
        (root / f"images{split}").mkdir(parents=True, exist_ok=True)
        (root / f"labels{split}").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            present = set(range(1, spec["labels"] + 1)) - ({6} if kind == "many" and index % 3 == 0 else set())
            label = ellipsoids(shape, spacing, present, rng)
            if spec["modality"] == "CT":
                tissue = np.where(label > 0, means[label] - 900, 40.0)
                image = (tissue + rng.normal(0, 20, shape)).astype(np.int16)
            else:
                tissue = means[label] * rng.uniform(0.5, 2.0) + rng.normal(0, 60, shape)
                image = np.abs(tissue + 1j * rng.normal(0, 60, shape)).astype(np.float32)
            case = f"{kind}.v1_{split.lower()}{index:03d}" if kind == "multi" else f"{kind}_{split.lower()}{index:03d}"
            nib.save(nib.Nifti1Image(image, affine), root / f"images{split}" / f"{case}_0000{ending}")
            if kind == "multi":
                second = (np.sqrt(np.abs(image)) * 10).astype(np.int16)
                nib.save(nib.Nifti1Image(second, affine), root / f"images{split}" / f"{case}_0001{ending}")
            nib.save(nib.Nifti1Image(label, affine), root / f"labels{split}" / f"{case}{ending}")
    channels = {"0": "T2", "1": "ADC"} if kind == "multi" else {"0": spec["modality"]}
    labels = {"background": 0, **{f"class{k}": k for k in range(1, spec["labels"] + 1)}}
    meta = {"channel_names": channels, "labels": labels, "numTraining": spec["n"], "file_ending": ending, "name": kind}
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
