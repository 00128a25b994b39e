"""Registry of network builders keyed by the config's ``model.name``.

A builder takes the model's settings, the number of input channels and the number of classes and
returns an ``nn.Module``. New architectures register themselves with :func:`register`; nothing
else in the pipeline needs to know their classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from pipeline.errors import ConfigError

Builder = Callable[[Any, int, int], nn.Module]
_BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(settings, in_channels, num_classes)`` under ``name``."""

    def wrap(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"model '{name}' is registered twice")
        _BUILDERS[name] = builder
        return builder

    return wrap


def available_models() -> list[str]:
    """Names of every registered model."""
    return sorted(_BUILDERS)


def build_model(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    """Build the network named by ``settings.name``.

    Args:
        settings: a model section of the config (must have ``name``).
        in_channels: image channels the network receives (modalities x slices for 2.5D).
        num_classes: output channels, background included.

    Raises:
        ConfigError: no builder is registered under that name.
    """
    try:
        builder = _BUILDERS[settings.name]
    except KeyError:
        raise ConfigError(f"model.name: unknown model '{settings.name}'; available: {available_models()}") from None
    return builder(settings, in_channels, num_classes)


@register("unet2d")
def _unet2d(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    from pipeline.models.unet2d import UNet2d

    return UNet2d(
        in_channels,
        num_classes,
        tuple(settings.widths),
        settings.norm,
        settings.pools,
        settings.kernels,
        settings.activation,
    )


@register("vnet3d")
def _vnet3d(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    from pipeline.models.vnet3d import VNet3d

    return VNet3d(
        in_channels,
        num_classes,
        tuple(settings.widths),
        tuple(settings.convs),
        settings.kernel_size,
        settings.norm,
        settings.pools,
        settings.kernels,
    )


@register("autoencoder")
def _autoencoder(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    """``num_classes`` is ignored: an autoencoder reconstructs its ``in_channels``."""
    from pipeline.models.autoencoders import Autoencoder, build_encoder

    return Autoencoder(
        build_encoder(settings, in_channels),
        in_channels,
        settings.spatial_dims,
        settings.variant,
        settings.latent_channels,
        settings.norm,
        settings.sparsity_lambda,
        settings.noise,
        settings.noise_level,
        settings.kl_beta,
    )


# Natural-image architectures (pipeline/models/natural/): the paper settings are in configs/natural/.
@register("fcn32s")
@register("fcn16s")
@register("fcn8s")
def _fcn(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    from pipeline.models.natural.fcn import FCN

    return FCN(settings.name, in_channels, num_classes, tuple(settings.widths), settings.fc_width, settings.upsample)


@register("deconvnet")
def _deconvnet(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    from pipeline.models.natural.encoder_decoder import deconvnet

    return deconvnet(in_channels, num_classes, tuple(settings.widths), settings.fc_width, settings.fc_kernel, settings.unpool)


@register("segnet")
def _segnet(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    from pipeline.models.natural.encoder_decoder import segnet

    return segnet(in_channels, num_classes, tuple(settings.widths), settings.unpool)


@register("pspnet")
def _pspnet(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    from pipeline.models.natural.pspnet import PSPNet

    return PSPNet(in_channels, num_classes, settings.depth, settings.width, tuple(settings.bins), settings.head_channels)


@register("deeplabv1")
@register("deeplabv2")
@register("deeplabv3")
@register("deeplabv3plus")
def _deeplab(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    from pipeline.models.natural.deeplab import DeepLabResNet, DeepLabV1

    if settings.name == "deeplabv1":
        return DeepLabV1(in_channels, num_classes, tuple(settings.widths), settings.fc_width, settings.fc_dilation)
    version = settings.name.removeprefix("deeplab")
    return DeepLabResNet(
        version,
        in_channels,
        num_classes,
        settings.depth,
        settings.width,
        settings.aspp_channels,
        settings.atrous_rates,
        settings.cascade,
        settings.low_level_channels,
    )


@register("setr_naive")
@register("setr_pup")
@register("setr_mla")
def _setr(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    from pipeline.models.natural.setr import SETR

    return SETR(
        settings.name.removeprefix("setr_"),
        in_channels,
        num_classes,
        tuple(settings.image_size),
        settings.hidden_size,
        settings.mlp_dim,
        settings.num_layers,
        settings.num_heads,
        settings.decoder_channels,
    )


@register("swin_upernet")
def _swin(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    from pipeline.models.natural.swin import SwinUPerNet

    return SwinUPerNet(
        in_channels,
        num_classes,
        settings.embed_dim,
        settings.depths,
        settings.num_heads,
        settings.window_size,
        settings.decoder_channels,
    )


@register("mask_rcnn")
def _mask_rcnn(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    from pipeline.models.natural.detection.mask_rcnn import MaskRCNN

    return MaskRCNN(settings, in_channels, num_classes)
