"""Config sections of the data stages: base, data, synth, scenes, natural, verify, preprocess."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Section


class BaseSettings(Section):
    """Settings shared by all stages."""

    seed: int = 0
    num_workers: int = Field(2, ge=0, description="worker processes for per-case work (0 = in-process)")
    torch_threads: int = Field(
        2, ge=0, description="torch intra-op threads of every stage: results depend on it (0 = one per core, as PyTorch)"
    )


class DataSettings(Section):
    """Where the dataset lives: any MSD or nnU-Net v2 raw folder (with dataset.json)."""

    root: Path = Path("data/phantom")


class SynthSettings(Section):
    """Phantom generator: abdominal CT (the embedded default dataset) or brain MR (``modality: MR``, 1 mm voxels)."""

    modality: Literal["CT", "MR"] = "CT"
    out_dir: Path = Path("data/phantom")
    seed: int = 1234
    n_labeled: int = Field(12, ge=0)
    n_test: int = Field(4, ge=0)
    n_unlabeled: int = Field(24, ge=0)
    matrix: int = Field(256, ge=32, description="in-plane matrix size (square)")
    inplane_spacing_mm: tuple[float, float] = (1.25, 1.45)
    slice_spacing_mm: tuple[float, float] = (3.0, 5.0)
    z_extent_mm: tuple[float, float] = (200.0, 240.0)
    noise_sd_hu: tuple[float, float] = (10.0, 22.0)
    oblique_degrees: float = Field(20.0, ge=0.0, le=45.0)

    @field_validator("inplane_spacing_mm", "slice_spacing_mm", "z_extent_mm", "noise_sd_hu")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high:
            raise ValueError(f"expected 0 < low <= high, got {list(value)}")
        return value


class ScenesSettings(Section):
    """Generated natural scenes in the Pascal VOC layout (the natural-image track's default data)."""

    out_dir: Path = Path("data/scenes")
    seed: int = 2026
    n_train: int = Field(160, ge=1)
    n_val: int = Field(40, ge=1)
    size: int = Field(256, ge=32)
    max_objects: int = Field(6, ge=2)


class NaturalSettings(Section):
    """A Pascal VOC-layout folder prepared for training: RGB scaled to [0, 1], then per-channel standardised."""

    root: Path = Field(Path("data/scenes"), description="JPEGImages/, SegmentationClass/, ImageSets/Segmentation/")
    out_dir: Path = Path("data/natural")
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    void_label: int = Field(255, description="VOC's border/void value; mapped to background for training and scoring")


class CheckSettings(Section):
    """The one set of input checks every reader applies (verify, plan, preprocess, infer, predict, evaluate, export).

    Rows F, G and V of docs/RELIABILITY.md. A tolerance lives here and nowhere else.
    """

    spacing_tolerance_mm: float = Field(1e-3, gt=0, description="image vs label spacing (G2)")
    origin_tolerance_mm: float = Field(
        1e-3, gt=0, description="image vs label origin (G3); qform vs sform displacement at the image corners (G9)"
    )
    direction_tolerance: float = Field(1e-4, gt=0, description="direction cosines (G3) and orthonormality |D^T D - I| (G4)")
    max_decoded_gib: float = Field(
        8.0, gt=0, description="largest voxel data a header may declare; larger is refused before decompression (F7)"
    )


class VerifySettings(Section):
    """The ``verify`` stage's report and policies; its tolerances are ``checks``."""

    report: Path = Path("reports/verify.json")
    allow_singleton_4d: bool = True


class PlanSettings(Section):
    """The ``plan`` stage (fingerprint -> plans.json) and which planned configuration a training stage uses."""

    file: Path = Field(Path("reports/plan/plans.json"), description="written by `segpipe plan`, read by every later stage")
    profile: Literal["cpu", "gpu24", "gpu80", "tiny"] = Field(
        "cpu", description="hardware profile: memory budget and steps (tiny: smoke tests)"
    )
    configuration: Literal["2d", "3d", "3d_fullres", "3d_lowres"] | None = Field(
        None, description="training stages: the planned configuration (3d = the profile's choice); null = no plan"
    )
    context_slices: int = Field(1, ge=0, description="2.5D input of the 2D configuration: neighbouring slices each side")


class CrossvalSettings(Section):
    """Cross-validation: k seeded folds over the labelled training cases; which folds the training stages run."""

    folds: int = Field(5, ge=2)
    train_folds: tuple[int, ...] = Field((0,), min_length=1, description="folds trained by `dvc repro` (DVC foreach)")
    seed: int = 12345
    split_file: Path = Field(Path("reports/crossval/splits.json"), description="written by `segpipe plan`")
    custom_split: Path | None = Field(None, description="your own split file ([{train: [...], val: [...]}, ...]), checked")
    decisions: Path = Field(Path("reports/crossval/decisions.json"), description="written by `segpipe crossval`")

    @model_validator(mode="after")
    def _check(self) -> CrossvalSettings:
        bad = [k for k in self.train_folds if not 0 <= k < self.folds]
        if bad:
            raise ValueError(f"train_folds {bad} are not among folds 0..{self.folds - 1}")
        return self


class PreprocessSettings(Section):
    """Orientation, spacing, intensity normalisation and cropping."""

    out_dir: Path = Path("data/preprocessed")
    spacing_mm: tuple[float, float, float] | None = Field(
        None, description="target (x, y, z) spacing in RAS; null = planned (`segpipe plan`); a value overrides the plan"
    )
    ct_normalisation: Literal["percentile", "window"] = "percentile"
    ct_percentiles: tuple[float, float] = (0.5, 99.5)
    ct_window_hu: tuple[float, float] = (-160.0, 240.0)
    body_threshold_hu: float = -500.0
    crop_margin_mm: float = Field(5.0, ge=0)
    image_interpolation: Literal["linear", "bspline"] = "linear"
    mr_bias_correction: Literal["n4", "none"] | None = Field(
        None,
        description="MR-like channels: N4 bias-field correction before the z-score; null = planned (N4 on the channels "
        "where the fingerprint's bias probe finds it makes the labelled classes more separable)",
    )
    mr_normalisation_mask: Literal["foreground", "none"] | None = Field(
        None,
        description="MR-like channels: z-score in the foreground mask (0 outside it, cropped to it; the plan's choice "
        "when null) or, with none, over every voxel with no crop and no N4 (a view that is all tissue)",
    )
    include_unlabeled: bool = True
    intensity_samples_per_case: int = Field(20000, ge=100)

    @model_validator(mode="after")
    def _check(self) -> PreprocessSettings:
        if self.spacing_mm is not None and min(self.spacing_mm) <= 0:
            raise ValueError(f"spacing_mm must be positive, got {list(self.spacing_mm)}")
        low, high = self.ct_percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(f"ct_percentiles must satisfy 0 <= low < high <= 100, got {[low, high]}")
        return self
