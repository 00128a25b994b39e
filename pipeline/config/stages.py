"""Config sections of training, tracking, inference, evaluation and export."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from pipeline.config.base import Section


class LossSettings(Section):
    """Segmentation loss (MONAI losses where they exist); softmax over classes, background excluded from overlap terms."""

    name: Literal["dice", "tversky", "focal_tversky", "dice_ce", "ce", "ce_border"] = "dice_ce"
    alpha: float = Field(0.3, ge=0, description="Tversky weight of false positives")
    beta: float = Field(0.7, ge=0, description="Tversky weight of false negatives")
    gamma: float = Field(4 / 3, gt=0, description="focal-Tversky exponent: loss = (1 - TI) ** (1 / gamma)")
    include_background: bool = False
    batch: bool = Field(
        False,
        description="overlap terms over the whole batch as one volume (nnU-Net's batch Dice) instead of per sample and averaged",
    )
    border_w0: float = Field(10.0, ge=0, description="U-Net border weight w0")
    border_sigma_px: float = Field(5.0, gt=0, description="U-Net border weight sigma in voxels")


class AugmentSettings(Section):
    """Patch augmentation (MONAI transforms), as in the U-Net paper and nnU-Net. Probabilities per sample."""

    affine_prob: float = Field(0.2, ge=0, le=1)
    rotate_degrees: float = Field(15.0, ge=0, description="in-plane (axial) rotation range +/-")
    scale_range: tuple[float, float] = (0.85, 1.15)
    elastic_prob: float = Field(0.0, ge=0, le=1)
    elastic_sigma: tuple[float, float] = (9.0, 13.0)
    elastic_magnitude: tuple[float, float] = (0.0, 100.0)
    flip_axes: tuple[int, ...] = Field(
        (), description="spatial axes (0=x, 1=y, 2=z) flipped with flip_prob; off by default: organs are lateralised"
    )
    flip_prob: float = Field(0.5, ge=0, le=1)
    gamma_prob: float = Field(0.15, ge=0, le=1)
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = Field(0.15, ge=0, le=1)
    noise_std: float = Field(0.1, ge=0)


class TrainSettings(Section):
    """The training engine (shared by 2D and 3D models)."""

    out_dir: Path = Path("models/unet2d")
    checkpoint_dir: Path = Path("data/checkpoints/unet2d")
    reports_dir: Path = Path("reports/train_unet2d")
    patch_size: tuple[int, ...] = (128, 128)
    batch_size: int = Field(8, ge=1)
    iterations_per_epoch: int = Field(50, ge=1)
    max_epochs: int = Field(20, ge=1)
    max_time_minutes: float = Field(
        60.0, gt=0, description="guard: a run still short of its steps after this long fails (resume to continue)"
    )
    val_every: int = Field(2, ge=1)
    weights: Literal["best", "final"] = Field(
        "best",
        description="the weights training ends with: best (the best validated epoch) or final (the last epoch, nnU-Net's "
        "choice; a cross-validation fold keeps them, so its validation cases never select what out-of-fold scoring rates)",
    )
    val_cases: int = Field(2, ge=1, description="training cases held out for validation (when train.fold is null)")
    fold: int | None = Field(
        None, ge=0, description="cross-validation fold: validate on its cases, train on the rest; outputs in .../fold_<k>"
    )
    val_overlap: float = Field(0.25, ge=0, lt=1)
    labelled_cases: int | None = Field(
        None, ge=1, description="train on only this many labelled cases (seeded choice; label-efficiency experiments)"
    )
    foreground_fraction: float = Field(
        0.67, ge=0, le=1, description="share of patches centred on a foreground voxel (class-balanced)"
    )
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    momentum: float = Field(0.99, ge=0, lt=1)
    schedule: Literal["poly", "cosine", "constant"] = "poly"
    poly_exponent: float = 0.9
    grad_clip: float = Field(12.0, ge=0, description="max gradient norm (0 = off)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True
    deterministic: bool = True
    cache: Literal["auto", "memory", "mmap"] = Field(
        "auto", description="training arrays in memory, memory-mapped, or auto: mapped when over half the free memory"
    )
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes (0 = main process)")
    prefetch_batches: int = Field(
        1, ge=0, description="batches sampled in a background thread while the current step computes (0 = off)"
    )
    resume: bool = False
    init_from: Path | None = Field(None, description="encoder weights (encoder.pt of a pretrain stage) to start from")
    init_strict: bool = Field(True, description="a missing, unexpected or mis-shaped encoder key is an error")
    freeze_encoder_epochs: int = Field(0, ge=0, description="keep the transferred encoder fixed for the first N epochs")
    pretrain_images: Literal["unlabeled", "unlabeled+train"] = Field(
        "unlabeled+train", description="autoencoder pretraining: unlabeled scans, plus the training images without labels"
    )
    overlay_cases: int = Field(2, ge=0)
    evaluate_test: bool = True


class TrackingSettings(Section):
    """MLflow tracking. Relative paths are made absolute against the working directory."""

    enabled: bool = True
    tracking_uri: str | None = Field(None, description="default: sqlite:///<absolute cwd>/mlflow.db")
    artifact_root: Path = Path("mlartifacts")
    experiment: str = "segpipe"
    log_model: bool = True
    model_format: Literal["pt2", "pickle"] = Field(
        "pt2",
        description="the MLflow copy of the network: pt2 (torch.export program, no pickle; takes windows of the training "
        "patch size, any batch) or pickle (opt-in: loading it runs arbitrary code); model.pt is always a weights-only "
        "state_dict",
    )


Device = Literal["auto", "cpu", "cuda"]
ExportFormat = Literal["nifti", "seg_nrrd", "slicer_colors", "itksnap", "dicom_seg"]


class InferSettings(Section):
    """Sliding-window inference back to each scan's original geometry (``segpipe infer`` / ``segpipe predict``)."""

    models: Literal["auto"] | tuple[Path, ...] = Field(
        "auto", description="auto: what cross-validation chose (crossval.decisions); or model folders (several = ensemble)"
    )
    out_dir: Path = Path("predictions")
    overlap: float = Field(0.5, ge=0, lt=1)
    sw_batch_size: int = Field(4, ge=1, description="windows per forward pass")
    device: Device = Field("auto", description="where the windows run")
    stitch_device: Device = Field("auto", description="where windows are blended; cpu keeps a large scan off the GPU")
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    mirror_axes: tuple[int, ...] = Field((), description="test-time mirroring over these axes (0=x, 1=y, 2=z), averaged")
    force: bool = Field(False, description="segment scans the input gate refuses (qa.json records the override)")
    backend: Literal["torch", "onnx"] = Field(
        "torch", description="run the networks with PyTorch or ONNX Runtime (model.onnx beside model.pt; CPU only)"
    )
    uncertainty: bool = Field(True, description="write predictive entropy and mutual information maps beside each mask")
    largest_component: Literal["auto"] | tuple[str, ...] = Field(  # auto: cross-validation's decision, else the cards'
        "auto",
        description="auto: where every model's card found it helps on held-out cases; or class names reduced to their "
        "largest connected component",
    )

    @field_validator("mirror_axes")
    @classmethod
    def _spatial_axes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(axis not in (0, 1, 2) for axis in value):
            raise ValueError(f"mirror axes must be among 0, 1, 2, got {list(value)}")
        return tuple(sorted(set(value)))


class EvaluateSettings(Section):
    """Metrics in the original geometry, the QC report, and their MLflow run."""

    reports_dir: Path = Path("reports/evaluate")
    surface_tolerance_mm: float = Field(2.0, gt=0, description="tolerance of the normalised surface Dice")
    qc_cases: int | None = Field(None, ge=0, description="cases with overlays in the QC report (null = all)")


class ExportSettings(Section):
    """Files for clinical viewers, from the one label registry."""

    out_dir: Path = Path("exports")
    formats: tuple[ExportFormat, ...] = Field(
        ("nifti", "seg_nrrd", "slicer_colors", "itksnap", "dicom_seg"), description="dicom_seg only for DICOM-series input"
    )
