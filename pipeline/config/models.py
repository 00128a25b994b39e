"""Config sections of the networks: one settings class per architecture family, discriminated by ``name``."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Union

from pydantic import Field, model_validator

from pipeline.config.base import Section
from pipeline.config.network_topology import resolve_topology, total_stride

Sizes = tuple[tuple[int, ...], ...]
Activation = Literal["relu", "leaky_relu", "prelu"]


def check_topology(pools: Sizes | None, kernels: Sizes | None, num_stages: int, dims: int) -> None:
    """Planned pools and kernels: one entry per stage, one size per axis, no pooling at stage 0, odd kernels.

    Raises:
        ValueError: naming what is wrong.
    """
    resolve_topology(num_stages, dims, pools, kernels, 3)


def stride_product(pools: Sizes | None, num_stages: int, dims: int) -> tuple[int, ...]:
    """Per-axis total stride of a U-Net/V-Net: the product of ``pools`` (default: 2 per stage on every axis)."""
    return total_stride(resolve_topology(num_stages, dims, pools, None, 3)[0])


class UNet2dSettings(Section):
    """2D U-Net (Ronneberger et al.) on slices across ``slice_axis`` (axial by default); 2.5D when ``context_slices`` > 0."""

    name: Literal["unet2d"] = "unet2d"
    widths: tuple[int, ...] = Field((32, 64, 128, 256, 512), min_length=2)
    norm: Literal["batch", "instance", "none"] = "batch"
    activation: Activation = Field("prelu", description="after each convolution; relu is the paper's (see models/unet2d.py)")
    context_slices: int = Field(0, ge=0, description="neighbouring slices each side stacked as channels (2.5D)")
    slice_axis: int = Field(2, ge=0, le=2, description="the axis slices are taken across (planned: the coarsest; 2 = axial)")
    pools: Sizes | None = Field(None, description="per-level, per-axis pooling, pools[0] all ones (planned); null = 2x2")
    kernels: Sizes | None = Field(None, description="per-level, per-axis kernels (planned); null = 3x3")

    @property
    def spatial_dims(self) -> int:
        return 2

    @property
    def divisor(self) -> tuple[int, ...]:
        return stride_product(self.pools, len(self.widths), 2)

    @model_validator(mode="after")
    def _check_topology(self) -> UNet2dSettings:
        check_topology(self.pools, self.kernels, len(self.widths), 2)
        return self


class VNet3dSettings(Section):
    """3D V-Net (Milletari et al.) with configurable widths (paper: 16..256, 5x5x5 kernels)."""

    name: Literal["vnet3d"] = "vnet3d"
    widths: tuple[int, ...] = Field((16, 32, 64, 128, 256), min_length=2)
    convs: tuple[int, ...] = (1, 2, 3, 3, 3)
    kernel_size: int = Field(5, ge=1)
    norm: Literal["batch", "instance", "none"] = "batch"
    pools: Sizes | None = Field(None, description="per-stage, per-axis strides, pools[0] all ones (planned); null = 2x2x2")
    kernels: Sizes | None = Field(None, description="per-stage, per-axis kernels (planned); null = kernel_size everywhere")

    @property
    def spatial_dims(self) -> int:
        return 3

    @property
    def divisor(self) -> tuple[int, ...]:
        return stride_product(self.pools, len(self.widths), 3)

    @property
    def context_slices(self) -> int:
        return 0

    @property
    def slice_axis(self) -> int:
        return 2

    @model_validator(mode="after")
    def _check(self) -> VNet3dSettings:
        if len(self.convs) != len(self.widths):
            raise ValueError(f"convs {list(self.convs)} needs one entry per width {list(self.widths)}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        check_topology(self.pools, self.kernels, len(self.widths), 3)
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
    activation: Activation = Field("prelu", description="unet2d encoder only (the V-Net's is PReLU); as the U-Net's")
    context_slices: int = Field(0, ge=0)
    slice_axis: int = Field(2, ge=0, le=2, description="2D (unet2d) encoder: the axis slices are taken across")
    latent_channels: int = Field(8, ge=1, description="channels of z at the bottleneck (dim z << dim x)")
    sparsity_lambda: float = Field(1e-3, ge=0)
    noise: Literal["gaussian", "salt_pepper", "masking"] = "gaussian"
    noise_level: float = Field(0.3, ge=0)
    kl_beta: float = Field(1.0, ge=0)
    pools: Sizes | None = Field(None, description="as the segmentation network's (planned)")
    kernels: Sizes | None = Field(None, description="as the segmentation network's (planned)")

    @property
    def spatial_dims(self) -> int:
        return 2 if self.encoder == "unet2d" else 3

    @property
    def divisor(self) -> tuple[int, ...]:
        return stride_product(self.pools, len(self.widths), self.spatial_dims)

    @model_validator(mode="after")
    def _check(self) -> AutoencoderSettings:
        if self.encoder == "vnet3d" and len(self.convs) != len(self.widths):
            raise ValueError(f"convs {list(self.convs)} needs one entry per width {list(self.widths)}")
        if self.encoder == "vnet3d" and (self.context_slices or self.slice_axis != 2):
            raise ValueError("context_slices and slice_axis apply to the 2D (unet2d) encoder only")
        check_topology(self.pools, self.kernels, len(self.widths), self.spatial_dims)
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

    @property
    def slice_axis(self) -> int:
        return 2


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
    crf: bool = Field(False, description="dense-CRF refinement of validation/test probabilities (pip install -e '.[crf]')")

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


class MaskRCNNSettings(NaturalImageSettings):
    """Mask R-CNN (He et al., 2017): ResNet + FPN (P2-P6), RPN, RoIAlign, box and mask heads; paper settings."""

    name: Literal["mask_rcnn"] = "mask_rcnn"
    depth: Literal[18, 34, 50, 101, 152] = 50
    width: int = Field(64, ge=1, description="ResNet's first-stage width")
    fpn_channels: int = Field(256, ge=1)
    anchor_sizes: tuple[int, ...] = Field((32, 64, 128, 256, 512), description="one anchor size per level, P2-P6")
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_batch_per_image: int = Field(256, ge=1, description="anchors sampled per image for the RPN loss")
    rpn_positive_fraction: float = Field(0.5, gt=0, le=1)
    rpn_iou: tuple[float, float] = Field((0.3, 0.7), description="(background below, foreground from)")
    rpn_nms: float = Field(0.7, gt=0, le=1)
    rpn_pre_nms: tuple[int, int] = Field((2000, 1000), description="top proposals per level before NMS (train, test)")
    rpn_post_nms: tuple[int, int] = Field((2000, 1000), description="proposals per image after NMS (train, test)")
    roi_batch_per_image: int = Field(512, ge=1, description="RoIs sampled per image for the box and mask losses")
    roi_positive_fraction: float = Field(0.25, gt=0, le=1)
    roi_iou: float = Field(0.5, gt=0, le=1, description="a RoI is foreground from this IoU with a ground-truth box")
    box_pool: int = Field(7, ge=1, description="RoIAlign output for the box head")
    box_head_width: int = Field(1024, ge=1, description="the box head's two fully connected layers")
    mask_pool: int = Field(14, ge=1, description="RoIAlign output for the mask head (masks come out at twice this)")
    mask_head_channels: int = Field(256, ge=1)
    mask_head_convs: int = Field(4, ge=1)
    sampling_ratio: int = Field(2, ge=1)
    aligned: bool = Field(True, description="RoIAlign's half-pixel correction")
    score_threshold: float = Field(0.05, ge=0, le=1)
    box_nms: float = Field(0.5, gt=0, le=1, description="per-class NMS of the final detections")
    detections_per_image: int = Field(100, ge=1)
    mask_threshold: float = Field(0.5, gt=0, lt=1)
    divisor: ClassVar[int] = 32

    @model_validator(mode="after")
    def _check(self) -> MaskRCNNSettings:
        if len(self.anchor_sizes) != 5:
            raise ValueError(f"anchor_sizes needs one size per FPN level P2-P6 (5), got {list(self.anchor_sizes)}")
        if not self.rpn_iou[0] <= self.rpn_iou[1]:
            raise ValueError(f"rpn_iou (background below, foreground from) must be ordered, got {list(self.rpn_iou)}")
        return self


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
        MaskRCNNSettings,
    ],
    Field(discriminator="name"),
]
