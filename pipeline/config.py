"""Configuration: YAML files validated into typed objects, plus dotted ``key=value`` overrides.

One config system: every stage reads the same file (``configs/params.yaml`` by default; DVC
reads its params from it too), later files given with ``-c`` overlay earlier ones, and trailing
``section.key=value`` overrides win last. Unknown or mistyped keys are errors naming the key and
the file it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError
from pipeline.io_utils import text_digest

DEFAULT_CONFIG = Path("configs/params.yaml")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BaseSettings(Section):
    """Settings shared by all stages."""

    seed: int = 0
    num_workers: int = Field(2, ge=0, description="worker processes for per-case work (0 = in-process)")


class DataSettings(Section):
    """Where the dataset lives: any MSD or nnU-Net v2 raw folder (with dataset.json)."""

    root: Path = Path("data/phantom")


class SynthSettings(Section):
    """Phantom CT generator (the embedded default dataset)."""

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


class VerifySettings(Section):
    """Integrity checks (rows F, G and V of RELIABILITY.md)."""

    report: Path = Path("reports/verify.json")
    spacing_tolerance_mm: float = Field(1e-3, gt=0)
    origin_tolerance_mm: float = Field(1e-3, gt=0)
    direction_tolerance: float = Field(1e-4, gt=0)
    allow_singleton_4d: bool = True


class PreprocessSettings(Section):
    """Orientation, spacing, intensity normalisation and cropping."""

    out_dir: Path = Path("data/preprocessed")
    spacing_mm: tuple[float, float, float] | None = Field(
        (2.8, 2.8, 3.0), description="target (x, y, z) spacing in RAS; null = the dataset's median spacing"
    )
    ct_normalisation: Literal["percentile", "window"] = "percentile"
    ct_percentiles: tuple[float, float] = (0.5, 99.5)
    ct_window_hu: tuple[float, float] = (-160.0, 240.0)
    body_threshold_hu: float = -500.0
    crop_margin_mm: float = Field(5.0, ge=0)
    image_interpolation: Literal["linear", "bspline"] = "linear"
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


class UNet2dSettings(Section):
    """2D U-Net (Ronneberger et al.) trained on axial slices; 2.5D when ``context_slices`` > 0."""

    name: Literal["unet2d"] = "unet2d"
    widths: tuple[int, ...] = Field((32, 64, 128, 256, 512), min_length=2)
    norm: Literal["batch", "instance", "none"] = "batch"
    context_slices: int = Field(0, ge=0, description="neighbouring slices each side stacked as channels (2.5D)")

    @property
    def spatial_dims(self) -> int:
        return 2


class VNet3dSettings(Section):
    """3D V-Net (Milletari et al.) with configurable widths (paper: 16..256, 5x5x5 kernels)."""

    name: Literal["vnet3d"] = "vnet3d"
    widths: tuple[int, ...] = Field((16, 32, 64, 128, 256), min_length=2)
    convs: tuple[int, ...] = (1, 2, 3, 3, 3)
    kernel_size: int = Field(5, ge=1)
    norm: Literal["batch", "instance", "none"] = "batch"

    @property
    def spatial_dims(self) -> int:
        return 3

    @property
    def context_slices(self) -> int:
        return 0

    @model_validator(mode="after")
    def _check(self) -> VNet3dSettings:
        if len(self.convs) != len(self.widths):
            raise ValueError(f"convs {list(self.convs)} needs one entry per width {list(self.widths)}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        return self


class AutoencoderSettings(Section):
    """Autoencoder for pretraining; its encoder is built from the same keys as ``unet2d`` / ``vnet3d``."""

    name: Literal["autoencoder"] = "autoencoder"
    variant: Literal["undercomplete", "sparse", "denoising", "variational"] = "undercomplete"
    encoder: Literal["unet2d", "vnet3d"] = "vnet3d"
    widths: tuple[int, ...] = Field((8, 16, 32, 64), min_length=2)
    convs: tuple[int, ...] = (1, 2, 2, 2)
    kernel_size: int = Field(3, ge=1)
    norm: Literal["batch", "instance", "none"] = "instance"
    context_slices: int = Field(0, ge=0)
    latent_channels: int = Field(8, ge=1, description="channels of z at the bottleneck (dim z << dim x)")
    sparsity_lambda: float = Field(1e-3, ge=0)
    noise: Literal["gaussian", "salt_pepper", "masking"] = "gaussian"
    noise_level: float = Field(0.3, ge=0)
    kl_beta: float = Field(1.0, ge=0)

    @property
    def spatial_dims(self) -> int:
        return 2 if self.encoder == "unet2d" else 3

    @model_validator(mode="after")
    def _check(self) -> AutoencoderSettings:
        if self.encoder == "vnet3d" and len(self.convs) != len(self.widths):
            raise ValueError(f"convs {list(self.convs)} needs one entry per width {list(self.widths)}")
        if self.encoder == "vnet3d" and self.context_slices:
            raise ValueError("context_slices applies to the 2D (unet2d) encoder only")
        return self


VGG16_WIDTHS = (64, 128, 256, 512, 512)
Unpooling = Literal["max_unpool", "bed_of_nails", "nearest"]


class NaturalImageSettings(Section):
    """Shared by the natural-image architectures: 2D networks on RGB images, no slice context."""

    @property
    def spatial_dims(self) -> int:
        return 2

    @property
    def context_slices(self) -> int:
        return 0


class FCNSettings(NaturalImageSettings):
    """FCN-32s/16s/8s (Long et al.) on VGG16; paper: widths 64..512, fc 4096, learned (transposed) upsampling."""

    name: Literal["fcn32s", "fcn16s", "fcn8s"] = "fcn8s"
    widths: tuple[int, ...] = Field(VGG16_WIDTHS, min_length=5, max_length=5)
    fc_width: int = Field(4096, ge=1)
    upsample: Literal["transposed", "bilinear", "nearest"] = "transposed"
    divisor: ClassVar[int] = 32


class DeconvNetSettings(NaturalImageSettings):
    """DeconvNet (Noh et al.); paper: fc 4096 with a 7x7 fc6 (inputs of at least 224 x 224), max-unpooling."""

    name: Literal["deconvnet"] = "deconvnet"
    widths: tuple[int, ...] = Field(VGG16_WIDTHS, min_length=5, max_length=5)
    fc_width: int = Field(4096, ge=1)
    fc_kernel: int = Field(7, ge=1, description="fc6 kernel: pool5 must be at least this large (input >= 32 x fc_kernel)")
    unpool: Unpooling = "max_unpool"
    divisor: ClassVar[int] = 32


class SegNetSettings(NaturalImageSettings):
    """SegNet (Badrinarayanan et al.); paper: VGG16 widths, unpooling with the encoder's max-pooling indices."""

    name: Literal["segnet"] = "segnet"
    widths: tuple[int, ...] = Field(VGG16_WIDTHS, min_length=5, max_length=5)
    unpool: Unpooling = "max_unpool"
    divisor: ClassVar[int] = 32


class PSPNetSettings(NaturalImageSettings):
    """PSPNet (Zhao et al.); paper: dilated ResNet-50/101 (output stride 8), bins 1, 2, 3, 6."""

    name: Literal["pspnet"] = "pspnet"
    depth: Literal[18, 34, 50, 101, 152] = 50
    width: int = Field(64, ge=1)
    bins: tuple[int, ...] = (1, 2, 3, 6)
    head_channels: int = Field(512, ge=1)
    divisor: ClassVar[int] = 8


class DeepLabSettings(NaturalImageSettings):
    """DeepLab v1 (VGG16 LargeFOV), v2 (ASPP-L), v3 (ASPP + image pooling), v3+ (v3 + decoder); ResNet-101 for v2-v3+."""

    name: Literal["deeplabv1", "deeplabv2", "deeplabv3", "deeplabv3plus"] = "deeplabv3plus"
    widths: tuple[int, ...] = Field(VGG16_WIDTHS, min_length=5, max_length=5, description="v1 only")
    fc_width: int = Field(1024, ge=1, description="v1 only: fc6/fc7 channels")
    fc_dilation: int = Field(12, ge=1, description="v1 only: fc6 dilation (LargeFOV)")
    depth: Literal[18, 34, 50, 101, 152] = 101
    width: int = Field(64, ge=1)
    aspp_channels: int = Field(256, ge=1)
    rates: tuple[int, ...] | None = Field(None, description="atrous rates; null = the paper's (v2: 6-12-18-24, v3/v3+: 6-12-18)")
    cascade: int = Field(0, ge=0, description="v3: cascaded atrous blocks before ASPP")
    low_level_channels: int = Field(48, ge=1, description="v3+ decoder")
    crf: bool = Field(False, description="v1: dense-CRF refinement at inference (needs pydensecrf2)")

    @property
    def divisor(self) -> int:
        return 8 if self.name in ("deeplabv1", "deeplabv2") else 16

    @property
    def atrous_rates(self) -> tuple[int, ...]:
        return self.rates or ((6, 12, 18, 24) if self.name == "deeplabv2" else (6, 12, 18))


class SETRSettings(NaturalImageSettings):
    """SETR (Zheng et al.); paper: ViT-Large (1024, 24 layers, 16 heads, MLP 4096) on 16 x 16 patches."""

    name: Literal["setr_naive", "setr_pup", "setr_mla"] = "setr_pup"
    image_size: tuple[int, int] = Field((512, 512), description="the ViT's fixed input size; must equal train.patch_size")
    hidden_size: int = Field(1024, ge=1)
    mlp_dim: int = Field(4096, ge=1)
    num_layers: int = Field(24, ge=4)
    num_heads: int = Field(16, ge=1)
    decoder_channels: int = Field(256, ge=2)
    divisor: ClassVar[int] = 16


class SwinSettings(NaturalImageSettings):
    """Swin Transformer + UPerNet (Liu et al.); Swin-T: embed 96, depths 2-2-6-2, heads 3-6-12-24, window 7."""

    name: Literal["swin_upernet"] = "swin_upernet"
    embed_dim: int = Field(96, ge=1)
    depths: tuple[int, int, int, int] = (2, 2, 6, 2)
    num_heads: tuple[int, int, int, int] = (3, 6, 12, 24)
    window_size: int = Field(7, ge=1)
    decoder_channels: int = Field(512, ge=1)
    divisor: ClassVar[int] = 32


ModelSettings = Annotated[
    Union[  # noqa: UP007
        UNet2dSettings,
        VNet3dSettings,
        AutoencoderSettings,
        FCNSettings,
        DeconvNetSettings,
        SegNetSettings,
        PSPNetSettings,
        DeepLabSettings,
        SETRSettings,
        SwinSettings,
    ],
    Field(discriminator="name"),
]


class LossSettings(Section):
    """Segmentation loss (MONAI losses where they exist); softmax over classes, background excluded from overlap terms."""

    name: Literal["dice", "tversky", "focal_tversky", "dice_ce", "ce", "ce_border"] = "dice_ce"
    alpha: float = Field(0.3, ge=0, description="Tversky weight of false positives")
    beta: float = Field(0.7, ge=0, description="Tversky weight of false negatives")
    gamma: float = Field(4 / 3, gt=0, description="focal-Tversky exponent: loss = (1 - TI) ** (1 / gamma)")
    include_background: bool = False
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
    max_time_minutes: float = Field(5.0, gt=0, description="wall-clock budget; training stops after the epoch that crosses it")
    val_every: int = Field(2, ge=1)
    val_cases: int = Field(2, ge=1, description="training cases held out for validation")
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
    cache: Literal["memory", "mmap"] = "memory"
    loader_workers: int = Field(0, ge=0, description="DataLoader worker processes (0 = main process)")
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


Device = Literal["auto", "cpu", "cuda"]
ExportFormat = Literal["nifti", "seg_nrrd", "slicer_colors", "itksnap", "dicom_seg"]


class InferSettings(Section):
    """Sliding-window inference back to each scan's original geometry (``segpipe infer`` / ``segpipe predict``)."""

    models: tuple[Path, ...] = Field(
        (Path("models/unet2d"), Path("models/vnet3d")), min_length=1, description="model folders; several = ensemble"
    )
    out_dir: Path = Path("predictions")
    overlap: float = Field(0.5, ge=0, lt=1)
    sw_batch_size: int = Field(4, ge=1, description="windows per forward pass")
    device: Device = Field("auto", description="where the windows run")
    stitch_device: Device = Field("auto", description="where windows are blended; cpu keeps a large scan off the GPU")
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    mirror_axes: tuple[int, ...] = Field((), description="test-time mirroring over these axes (0=x, 1=y, 2=z), averaged")
    largest_component: tuple[str, ...] = Field(
        ("liver", "spleen"), description="organs reduced to their largest connected component (not paired organs)"
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


class PipelineConfig(Section):
    """The whole configuration; each stage reads its own section plus ``base`` and ``data``."""

    base: BaseSettings = BaseSettings()
    data: DataSettings = DataSettings()
    synth: SynthSettings = SynthSettings()
    scenes: ScenesSettings = ScenesSettings()
    natural: NaturalSettings = NaturalSettings()
    verify: VerifySettings = VerifySettings()
    preprocess: PreprocessSettings = PreprocessSettings()
    model: ModelSettings = UNet2dSettings()
    loss: LossSettings = LossSettings()
    augment: AugmentSettings = AugmentSettings()
    train: TrainSettings = TrainSettings()
    tracking: TrackingSettings = TrackingSettings()
    infer: InferSettings = InferSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    export: ExportSettings = ExportSettings()

    @model_validator(mode="after")
    def _check_patch(self) -> PipelineConfig:
        dims, patch = self.model.spatial_dims, self.train.patch_size
        if len(patch) != dims:
            raise ValueError(f"train.patch_size {list(patch)} must have {dims} entries for model '{self.model.name}'")
        divisor = getattr(self.model, "divisor", None) or 2 ** (len(self.model.widths) - 1)
        if any(p % divisor for p in patch):
            raise ValueError(f"train.patch_size {list(patch)} must be divisible by {divisor} for model '{self.model.name}'")
        if isinstance(self.model, SETRSettings) and tuple(patch) != tuple(self.model.image_size):
            raise ValueError(f"train.patch_size {list(patch)} must equal model.image_size {list(self.model.image_size)} for SETR")
        return self

    def section_digest(self, *names: str) -> str:
        """Return a stable hash of the named sections (used to detect changed settings)."""
        payload = {name: getattr(self, name).model_dump(mode="json") for name in names}
        return text_digest(json.dumps(payload, sort_keys=True))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], parsed value); the value is read as YAML.

    Raises:
        ConfigError: if there is no ``=`` or the key is empty.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE with a dotted key, e.g. preprocess.num_workers=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip().split("."), value


def load_config(paths: list[Path] | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load YAML files (later overlay earlier), apply overrides and validate.

    Args:
        paths: config files; ``None`` means ``configs/params.yaml`` if it exists, else defaults.
        overrides: ``section.key=value`` strings applied last.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown key or invalid value (naming key and source).
    """
    if paths is None:
        paths = [DEFAULT_CONFIG] if DEFAULT_CONFIG.exists() else []
    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for path in paths:
        _merge(merged, _read_yaml(Path(path)), (), str(path), sources)
    for text in overrides or []:
        keys, value = parse_override(text)
        _merge(merged, _nest(keys, value), (), f"override {text!r}", sources)
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    for key in reversed(keys):
        value = {key: value}
    return value


def _merge(dst: dict, src: dict, prefix: tuple[str, ...], source: str, sources: dict) -> None:
    for key, value in src.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, path, source, sources)
        else:
            dst[key] = value
        if not isinstance(value, dict):
            sources[path] = source
        else:
            sources.setdefault(path, source)


def _describe(exc: ValidationError, sources: dict[tuple[str, ...], str]) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        key = ".".join(loc)
        source = next((sources[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in sources), "defaults")
        if not loc:
            lines.append(f"{', '.join(sorted(set(sources.values()))) or 'defaults'}: {err['msg']}")
        elif err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
        else:
            lines.append(f"{source}: invalid value for '{key}': {err['msg']} (got {err.get('input')!r})")
    return "invalid configuration:\n" + "\n".join(lines)
