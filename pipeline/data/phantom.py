"""Abdominal CT phantoms in MSD layout: the embedded default dataset (``segpipe synth``).

Anatomy is defined in world coordinates (RAS+, mm, origin near the first lumbar vertebra) and
sampled on each case's own voxel grid, so every orientation (RAS, LPS, LAS, oblique) shows the
same patient-space anatomy: liver on the patient's right (+x), spleen on the left (-x).
A smooth random displacement field, per-organ jitter and scaling make each case different.
Tissue values are those of a portal-venous CT (HU); partial volume comes from a slice-profile
blur and noise is added last; storage is int16 like a scanner's.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipeline.config import SynthSettings
from pipeline.data.nifti import write_nifti
from pipeline.io_utils import write_json_atomic

LABELS = {0: "background", 1: "liver", 2: "spleen", 3: "kidney"}
ORIENTATIONS = ("RAS", "LPS", "LAS", "oblique")

# Mean HU of each tissue (portal-venous phase); spleen is deliberately close to liver.
HU = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "muscle": 55.0,
    "viscera": 25.0,
    "gas": -900.0,
    "cancellous": 230.0,
    "cortical": 750.0,
    "disc": 85.0,
    "canal": 15.0,
    "aorta": 165.0,
    "ivc": 125.0,
    "liver": 100.0,
    "spleen": 112.0,
    "kidney_cortex": 175.0,
    "kidney_medulla": 110.0,
    "stomach": 15.0,
}
_AXIS_VECTORS = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}


@dataclass(frozen=True)
class CaseSpec:
    """Everything random about one phantom, drawn from its own seed."""

    case_id: str
    seed: int
    orientation: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    noise_sd: float


def orientation_matrix(code: str, oblique_degrees: float = 0.0) -> np.ndarray:
    """Return the 3x3 direction matrix (columns = RAS directions of the array axes) for an axis code.

    ``"oblique"`` is LPS rotated by ``oblique_degrees`` about an axis between x and z (a gantry tilt
    combined with an in-plane rotation).
    """
    if code == "oblique":
        axis = np.array([1.0, 0.3, 1.0]) / np.linalg.norm([1.0, 0.3, 1.0])
        return _rotation(axis, np.deg2rad(oblique_degrees)) @ orientation_matrix("LPS")
    return np.array([_AXIS_VECTORS[letter] for letter in code], dtype=np.float64).T


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def make_case_specs(settings: SynthSettings) -> dict[str, list[CaseSpec]]:
    """Draw the per-case parameters of each split deterministically from ``settings.seed``."""
    splits = {"train": settings.n_labeled, "test": settings.n_test, "unlabeled": settings.n_unlabeled}
    specs: dict[str, list[CaseSpec]] = {}
    for split_index, (split, count) in enumerate(splits.items()):
        specs[split] = [_draw_spec(settings, split_index, split, i) for i in range(count)]
    return specs


def _draw_spec(settings: SynthSettings, split_index: int, split: str, index: int) -> CaseSpec:
    seed = int(np.random.SeedSequence([settings.seed, split_index, index]).generate_state(1)[0])
    rng = np.random.default_rng(seed)
    inplane = float(rng.uniform(*settings.inplane_spacing_mm))
    thickness = float(rng.uniform(*settings.slice_spacing_mm))
    n_slices = int(round(rng.uniform(*settings.z_extent_mm) / thickness))
    prefix = {"train": "phantom", "test": "phantom_test", "unlabeled": "phantom_unlabeled"}[split]
    return CaseSpec(
        case_id=f"{prefix}_{index:03d}",
        seed=seed,
        orientation=ORIENTATIONS[(index + split_index) % len(ORIENTATIONS)],
        shape=(settings.matrix, settings.matrix, n_slices),
        spacing=(round(inplane, 4), round(inplane, 4), round(thickness, 3)),
        noise_sd=float(rng.uniform(*settings.noise_sd_hu)),
    )


def case_affine(spec: CaseSpec, rng: np.random.Generator, oblique_degrees: float) -> np.ndarray:
    """Affine whose grid centre lies near the body centre (with jitter) for the case's orientation."""
    direction = orientation_matrix(spec.orientation, oblique_degrees)
    centre = np.array([rng.uniform(-15, 15), rng.uniform(-10, 10), rng.uniform(0, 25)])
    linear = direction * np.asarray(spec.spacing)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = centre - linear @ ((np.asarray(spec.shape) - 1) / 2.0)
    return affine


def render_case(spec: CaseSpec, oblique_degrees: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one phantom.

    Returns:
        (int16 HU image, uint8 label map, 4x4 RAS affine), arrays indexed (x, y, z) like the affine.
    """
    rng = np.random.default_rng(spec.seed)
    affine = case_affine(spec, rng, oblique_degrees)
    world = _world_coordinates(affine, spec.shape)
    world = world + _displacement(world, rng)
    anatomy = _Anatomy(world, rng, spec.shape)
    hu, label = anatomy.paint()
    hu = _partial_volume(hu, spec.spacing)
    hu += rng.normal(0.0, spec.noise_sd, size=hu.shape).astype(np.float32)
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return image, label, affine


def _world_coordinates(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Every voxel's RAS position in mm, shape ``(*shape, 3)``, float32 (see ``weighted_sum``)."""
    index = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    rows = [weighted_sum(index, affine[row, :3]) + affine[row, 3] for row in range(3)]
    return np.stack(rows, axis=-1).astype(np.float32)


def weighted_sum(components, weights) -> np.ndarray:
    """``sum(components[i] * weights[i])`` in float64, one elementwise product and sum after another.

    The phantoms are drawn without BLAS so that they have the same bits on every CPU: NumPy's ``@`` calls
    OpenBLAS, whose kernel is chosen per CPU and sums in its own order (measured: the displacement's
    ``world @ k`` differed in the last bit between OpenBLAS's Haswell and SkylakeX kernels for about 1 %
    of the voxels, and the CT phantom's bytes with them, on the same machine).
    """
    total = np.zeros(np.shape(components[0]), dtype=np.float64)
    for component, weight in zip(components, weights, strict=True):
        total += np.asarray(component, dtype=np.float64) * float(weight)
    return total


def _displacement(world: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth random deformation: a few long-wavelength sinusoids, amplitude up to ~7 mm."""
    out = np.zeros_like(world)
    for _ in range(3):
        k = rng.normal(size=3)
        k *= 2 * np.pi / rng.uniform(120, 260) / np.linalg.norm(k)
        phase = rng.uniform(0, 2 * np.pi)
        amplitude = rng.uniform(2.0, 5.0) * rng.normal(size=3)
        wave = np.sin((weighted_sum(np.moveaxis(world, -1, 0), k) + phase).astype(np.float32))
        out += wave[..., None] * amplitude.astype(np.float32)
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], factor: int = 8) -> np.ndarray:
    coarse = rng.normal(size=tuple(max(2, s // factor) for s in shape)).astype(np.float32)
    zoomed = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=1)
    return zoomed[tuple(slice(0, s) for s in shape)]


def _partial_volume(hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Blur with the scanner's point spread: ~0.7 mm in-plane, slice profile FWHM = slice thickness."""
    sigma = [0.7 / spacing[0], 0.7 / spacing[1], spacing[2] / 2.355 / spacing[2]]
    return ndimage.gaussian_filter(hu, sigma=sigma, mode="nearest")


class _Anatomy:
    """Paints tissues in order (later wins) and keeps the label map of the organs."""

    def __init__(self, world: np.ndarray, rng: np.random.Generator, shape: tuple[int, int, int]):
        self.x, self.y, self.z = world[..., 0], world[..., 1], world[..., 2]
        self.rng = rng
        self.shape = shape
        self.hu = np.full(shape, HU["air"], dtype=np.float32)
        self.label = np.zeros(shape, dtype=np.uint8)
        self.offset = float(rng.uniform(-12, 12))  # contrast timing shifts enhanced organs together

    def jitter(self, centre, semi, shift=8.0, scale=0.12):
        c = np.asarray(centre, dtype=np.float32) + self.rng.uniform(-shift, shift, 3).astype(np.float32)
        s = np.asarray(semi, dtype=np.float32) * self.rng.uniform(1 - scale, 1 + scale, 3).astype(np.float32)
        return c, s

    def ellipsoid(self, centre, semi) -> np.ndarray:
        (cx, cy, cz), (sx, sy, sz) = centre, semi
        return ((self.x - cx) / sx) ** 2 + ((self.y - cy) / sy) ** 2 + ((self.z - cz) / sz) ** 2 <= 1.0

    def ellipse(self, cx, cy, sx, sy) -> np.ndarray:
        return ((self.x - cx) / sx) ** 2 + ((self.y - cy) / sy) ** 2 <= 1.0

    def paint(self) -> tuple[np.ndarray, np.ndarray]:
        cavity = self._body_wall()
        self._viscera(cavity)
        self._lungs(cavity)
        self._spine_and_ribs()
        self._vessels()
        self._organs(cavity)
        return self.hu, self.label

    def _body_wall(self) -> np.ndarray:
        ax, ay = self.rng.uniform(140, 170), self.rng.uniform(100, 120)
        taper = 1.0 + 0.0008 * np.clip(self.z, -150, 150)
        fat = self.rng.uniform(12, 30)
        body = self.ellipse(0, 0, ax * taper, ay * taper)
        inner = self.ellipse(0, 0, (ax - fat) * taper, (ay - fat) * taper)
        cavity = self.ellipse(0, 0, (ax - fat - 10) * taper, (ay - fat - 10) * taper)
        self.hu[body] = HU["fat"]
        self.hu[inner] = HU["muscle"]
        self.cavity_axes = ((ax - fat - 10), (ay - fat - 10))
        return cavity

    def _viscera(self, cavity: np.ndarray) -> None:
        texture = _smooth_noise(self.rng, self.shape, factor=6)
        tissue = np.where(texture > 0.35, HU["fat"] + 10, HU["viscera"]).astype(np.float32)
        tissue[texture < -1.1] = HU["gas"]
        self.hu[cavity] = tissue[cavity]
        for side in (-1, 1):  # paraspinal muscles
            self.hu[self.ellipse(side * 38, -78, 26, 22)] = HU["muscle"]

    def _lungs(self, cavity: np.ndarray) -> None:
        for side in (-1, 1):
            c, s = self.jitter((side * 80, -15, 175), (75, 75, 70), shift=6, scale=0.08)
            self.hu[self.ellipsoid(c, s) & cavity] = HU["lung"]

    def _spine_and_ribs(self) -> None:
        body = self.ellipse(0, -47, 21, 18)
        cancellous = self.ellipse(0, -47, 18.5, 15.5)
        self.hu[body] = HU["cortical"]
        self.hu[cancellous] = HU["cancellous"]
        disc = (np.mod(self.z + self.rng.uniform(0, 32), 32.0) < 7.0) & body
        self.hu[disc] = HU["disc"]
        radius = np.hypot(self.x, self.y + 75)
        self.hu[(radius < 16) & (self.y < -68)] = HU["cortical"] - 150
        self.hu[radius < 9] = HU["canal"]
        self._ribs()

    def _ribs(self) -> None:
        sx, sy = self.cavity_axes
        r = np.hypot(self.x / (sx + 5), self.y / (sy + 5))
        angle = np.degrees(np.arctan2(self.y, self.x))
        lateral_or_posterior = (angle < 40) | (angle > 140)
        band = np.mod(self.z + 2 * np.abs(self.x) * 0.15 + self.rng.uniform(0, 28), 28.0) < 9.0
        ribs = (r > 0.93) & (r < 1.03) & band & lateral_or_posterior & (self.z > -40)
        self.hu[ribs] = HU["cortical"] - 250

    def _vessels(self) -> None:
        self.hu[self.ellipse(-14, -18, 11, 11)] = HU["aorta"] + self.offset
        self.hu[self.ellipse(20, -14, 11, 9)] = HU["ivc"] + self.offset

    def _organ(self, cavity, centre, semi, hu, value) -> np.ndarray:
        c, s = self.jitter(centre, semi)
        mask = self.ellipsoid(c, s) & cavity & (self.hu < 500)
        self.hu[mask] = hu
        if value:
            self.label[mask] = value
        return mask

    def _organs(self, cavity: np.ndarray) -> None:
        self._organ(cavity, (-48, 45, 70), (42, 30, 38), HU["stomach"], 0)
        for side, z in ((-1, -20), (1, -35)):  # right kidney sits lower
            c, s = self.jitter((side * 68, -45, z), (28, 24, 52))
            kidney = self.ellipsoid(c, s) & cavity
            self.hu[kidney] = HU["kidney_cortex"] + self.offset
            self.hu[self.ellipsoid(c, s * 0.55) & kidney] = HU["kidney_medulla"] + self.offset
            self.label[kidney] = 3
        self._organ(cavity, (-88, -40, 62), (32, 55, 50), HU["spleen"] + self.offset, 2)
        main = self._organ(cavity, (72, 8, 60), (78, 82, 85), HU["liver"] + self.offset, 1)
        left = self._organ(cavity, (-5, 55, 72), (48, 28, 40), HU["liver"] + self.offset, 1)
        texture = _smooth_noise(self.rng, self.shape, factor=4) * 6.0
        liver = main | left
        self.hu[liver] += texture[liver]


SPLIT_FOLDERS = {"train": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs"), "unlabeled": ("imagesUnlabeled", None)}


def write_rendered_case(out_dir: Path, split: str, case_id: str, image: np.ndarray, label: np.ndarray, affine) -> dict:
    """Write one rendered phantom into its split's MSD folders; return its ``dataset.json`` entry."""
    image_dir, label_dir = SPLIT_FOLDERS[split]
    entry = {"image": f"./{image_dir}/{case_id}.nii.gz"}
    write_nifti(out_dir / entry["image"], image, affine)
    if label_dir:
        entry["label"] = f"./{label_dir}/{case_id}.nii.gz"
        write_nifti(out_dir / entry["label"], label, affine)
    return entry


def write_msd_dataset(out_dir: Path, jobs: list[tuple], write_case, num_workers: int, meta: dict) -> Path:
    """Run ``write_case(job)`` for every ``(spec, out_dir, split, ...)`` job (in parallel when ``num_workers``), then write
    ``dataset.json``: ``meta`` (name, modality, labels, ...) plus the MSD split lists and counts."""
    if num_workers > 0:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            entries = list(pool.map(write_case, jobs))
    else:
        entries = [write_case(job) for job in jobs]
    by_split: dict[str, list[dict]] = {"train": [], "test": [], "unlabeled": []}
    for job, entry in zip(jobs, entries):
        by_split[job[2]].append(entry)
    payload = {
        **meta,
        "numTraining": len(by_split["train"]),
        "numTest": len(by_split["test"]),
        "numUnlabeled": len(by_split["unlabeled"]),
        "training": by_split["train"],
        "test": [e["image"] for e in by_split["test"]],
        "unlabeled": [e["image"] for e in by_split["unlabeled"]],
    }
    write_json_atomic(out_dir / "dataset.json", payload)
    return out_dir / "dataset.json"


def _write_case(args: tuple[CaseSpec, Path, str, float]) -> dict:
    spec, out_dir, split, oblique = args
    return write_rendered_case(out_dir, split, spec.case_id, *render_case(spec, oblique))


def generate_phantom_dataset(settings: SynthSettings, num_workers: int = 0) -> Path:
    """Write the phantom dataset (MSD layout plus ``unlabeled`` and ``labelsTs``) to ``settings.out_dir``.

    Args:
        settings: counts, matrix, spacing ranges, noise and seed.
        num_workers: processes to render cases in parallel (0 = in this process).

    Returns:
        Path of the written ``dataset.json``.
    """
    out_dir = Path(settings.out_dir)
    specs = make_case_specs(settings)
    jobs = [(spec, out_dir, split, settings.oblique_degrees) for split, items in specs.items() for spec in items]
    meta = {
        "name": "AbdomenPhantom",
        "description": "Synthetic abdominal CT phantoms generated by segpipe synth (not patient data)",
        "reference": "segpipe",
        "licence": "CC0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in LABELS.items()},
    }
    return write_msd_dataset(out_dir, jobs, _write_case, num_workers, meta)
