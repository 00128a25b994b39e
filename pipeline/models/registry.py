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

    return UNet2d(in_channels, num_classes, tuple(settings.widths), settings.norm)


@register("vnet3d")
def _vnet3d(settings: Any, in_channels: int, num_classes: int) -> nn.Module:
    from pipeline.models.vnet3d import VNet3d

    return VNet3d(in_channels, num_classes, tuple(settings.widths), tuple(settings.convs), settings.kernel_size, settings.norm)


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
