"""Brain MR phantoms in MSD layout: a second modality, label set and geometry to test self-configuration on.

What makes MR hard for a pipeline tuned on CT is here on purpose: intensities in arbitrary units (a
random global scale per scan), a smooth multiplicative bias field, Rician noise in a non-zero
background (magnitude images), and a head that fills anywhere from a few percent to about half of
the field of view. Voxels are 1 mm. Two labels: ``lesion`` (one blob, bright) and ``ventricles``
(a *pair* of dark lateral ventricles, so "keep the largest component" would delete a true half).
Anatomy is drawn in world coordinates (RAS, mm) and sampled on each case's grid, in the same
orientations as the CT phantom (RAS, LPS, LAS, oblique).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.config import SynthSettings
from pipeline.data.phantom import (
    ORIENTATIONS,
    _smooth_noise,
    _world_coordinates,
    orientation_matrix,
    write_msd_dataset,
    write_rendered_case,
)

MR_LABELS = {0: "background", 1: "lesion", 2: "ventricles"}
TISSUE = {"scalp": 520.0, "skull": 60.0, "csf": 150.0, "brain": 300.0, "lesion": 470.0, "ventricle": 110.0}


@dataclass(frozen=True)
class MRCaseSpec:
    """Everything random about one MR phantom."""

    case_id: str
    seed: int
    orientation: str
    shape: tuple[int, int, int]
    head_fill: float  # semi-axes as a fraction of the half field of view


def mr_case_specs(settings: SynthSettings) -> dict[str, list[MRCaseSpec]]:
    """Per-case parameters of each split, drawn from ``settings.seed``."""
    splits = {"train": settings.n_labeled, "test": settings.n_test, "unlabeled": settings.n_unlabeled}
    specs: dict[str, list[MRCaseSpec]] = {}
    for split_index, (split, count) in enumerate(splits.items()):
        specs[split] = []
        for index in range(count):
            seed = int(np.random.SeedSequence([settings.seed, 7, split_index, index]).generate_state(1)[0])
            rng = np.random.default_rng(seed)
            prefix = {"train": "brain", "test": "brain_test", "unlabeled": "brain_unlabeled"}[split]
            n = settings.matrix
            specs[split].append(
                MRCaseSpec(f"{prefix}_{index:03d}", seed, ORIENTATIONS[(index + split_index) % 4], (n, n, int(0.8 * n)),
                           float(rng.uniform(0.35, 0.9)))
            )  # fmt: skip
    return specs


def render_mr_case(spec: MRCaseSpec, oblique_degrees: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one MR phantom: (float32 magnitude image, uint8 labels, RAS affine), 1 mm voxels."""
    rng = np.random.default_rng(spec.seed)
    affine = np.eye(4)
    affine[:3, :3] = orientation_matrix(spec.orientation, oblique_degrees)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(spec.shape) - 1) / 2.0)
    world = _world_coordinates(affine, spec.shape)
    half = min(spec.shape[:2]) / 2 * spec.head_fill
    semi = np.array([0.78, 1.0, 0.85]) * half * rng.uniform(0.92, 1.08, 3)
    centre = rng.uniform(-0.08, 0.08, 3) * half
    r = np.sqrt((((world - centre) / semi) ** 2).sum(-1))
    truth = np.zeros(spec.shape, np.float32)
    label = np.zeros(spec.shape, np.uint8)
    truth[r < 1.0] = TISSUE["scalp"]
    truth[r < 0.93] = TISSUE["skull"]
    truth[r < 0.86] = TISSUE["csf"]
    brain = r < 0.82
    truth[brain] = TISSUE["brain"] + 25 * _smooth_noise(rng, spec.shape, 6)[brain]
    for side in (-1, 1):  # lateral ventricles: a pair either side of the midline
        offset = np.array([side * 0.16, rng.uniform(-0.05, 0.05), 0.12]) * semi + centre
        vr = np.sqrt((((world - offset) / (semi * [0.09, 0.3, 0.12] * rng.uniform(0.8, 1.25))) ** 2).sum(-1))
        truth[vr < 1] = TISSUE["ventricle"]
        label[vr < 1] = 2
    direction = rng.normal(size=3)
    where = centre + semi * 0.45 * direction / np.linalg.norm(direction) * rng.uniform(0.3, 1.0)
    lr = np.sqrt((((world - where) / (semi * rng.uniform(0.12, 0.22))) ** 2).sum(-1))
    lesion = (lr < 1) & brain & (label == 0)
    truth[lesion] = TISSUE["lesion"]
    label[lesion] = 1
    truth = ndimage.gaussian_filter(truth, 0.6)  # partial volume
    bias = np.exp(0.2 * _smooth_noise(rng, spec.shape, 24))
    scale = rng.uniform(0.4, 2.5)  # arbitrary units: no two scanners agree
    sigma = rng.uniform(0.03, 0.06) * TISSUE["brain"]
    signal = truth * bias
    image = np.hypot(signal + rng.normal(0, sigma, spec.shape), rng.normal(0, sigma, spec.shape)) * scale
    return image.astype(np.float32), label, affine


def _write_case(args) -> dict:
    spec, out_dir, split, oblique = args
    return write_rendered_case(out_dir, split, spec.case_id, *render_mr_case(spec, oblique))


def generate_mr_dataset(settings: SynthSettings, num_workers: int = 0) -> Path:
    """Write the brain MR phantom dataset (MSD layout plus ``unlabeled`` and ``labelsTs``) to ``settings.out_dir``.

    ``settings.matrix`` is the in-plane size (1 mm voxels; 0.8 x matrix slices); spacing ranges are not used.

    Returns:
        Path of the written ``dataset.json``.
    """
    out_dir = Path(settings.out_dir)
    specs = mr_case_specs(settings)
    jobs = [(spec, out_dir, split, settings.oblique_degrees) for split, items in specs.items() for spec in items]
    meta = {
        "name": "BrainPhantomMR",
        "description": "Synthetic brain MR phantoms generated by segpipe synth synth.modality=MR (not patient data)",
        "reference": "segpipe",
        "licence": "CC0",
        "tensorImageSize": "3D",
        "modality": {"0": "MR"},
        "labels": {str(k): v for k, v in MR_LABELS.items()},
    }
    return write_msd_dataset(out_dir, jobs, _write_case, num_workers, meta)
