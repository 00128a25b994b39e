"""The autoencoder family, 2D and 3D: undercomplete, sparse, denoising and variational.

Every autoencoder's ``encoder`` is *the same module class, built from the same keys* as the encoder
of ``unet2d`` (``UNetEncoder2d``) or ``vnet3d`` (``VNetEncoder3d``), so its weights load into the
segmentation network by name (``encoder.*``) with no conversion. The decoder reconstructs the input
from the bottleneck alone (no skip connections: otherwise the network could copy its input).

* undercomplete: a 1x1 convolution squeezes the bottleneck to ``latent_channels`` (dim z << dim x);
* sparse: the same, trained with ||x - x_hat||^2 + lambda * ||z||_1;
* denoising: reconstructs the clean x from a corrupted x (Gaussian, salt-and-pepper or masking noise);
* variational: a Gaussian encoder (mu, log sigma^2), the reparameterisation trick, loss
  reconstruction + beta * KL(q(z|x) || N(0, I)), and :meth:`Autoencoder.sample` from the prior.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config.network_topology import Sizes, resolve_topology, total_stride
from pipeline.models.layers import norm_layer
from pipeline.models.unet2d import UNetEncoder2d
from pipeline.models.vnet3d import VNetEncoder3d

VARIANTS = ("undercomplete", "sparse", "denoising", "variational")


class ReconstructionDecoder(nn.Module):
    """Transposed-convolution up-sampling, two conv-norm-ReLU layers per level, 1x1 conv to the image channels."""

    def __init__(self, widths: tuple[int, ...], out_channels: int, spatial_dims: int, norm: str, pools: Sizes | None = None):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        up = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        rev = tuple(reversed(widths))
        rpools = tuple(reversed(resolve_topology(len(widths), spatial_dims, pools, None, 3)[0]))
        layers: list[nn.Module] = []
        for i in range(len(rev) - 1):
            layers.append(up(rev[i], rev[i + 1], rpools[i], stride=rpools[i]))
            for _ in range(2):
                layers += [
                    conv(rev[i + 1], rev[i + 1], 3, padding=1),
                    norm_layer(norm, rev[i + 1], spatial_dims),
                    nn.ReLU(inplace=True),
                ]
        layers.append(conv(rev[-1], out_channels, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Autoencoder(nn.Module):
    """One autoencoder of the family; ``variant`` picks the latent and the loss.

    Args:
        encoder: a ``UNetEncoder2d`` or ``VNetEncoder3d`` (``forward`` returns features, coarsest last).
        in_channels: image channels to reconstruct.
        spatial_dims: 2 or 3.
        variant: one of ``VARIANTS``.
        latent_channels: channels of z at the bottleneck resolution.
        norm: decoder normalisation.
        sparsity_lambda: weight of the L1 penalty on z (sparse).
        noise: ``gaussian``, ``salt_pepper`` or ``masking`` (denoising); ``noise_level`` its strength.
        kl_beta: weight of the KL term (variational).
    """

    def __init__(
        self,
        encoder: nn.Module,
        in_channels: int,
        spatial_dims: int,
        variant: str = "undercomplete",
        latent_channels: int = 8,
        norm: str = "batch",
        sparsity_lambda: float = 1e-3,
        noise: str = "gaussian",
        noise_level: float = 0.3,
        kl_beta: float = 1.0,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown autoencoder variant '{variant}'; expected one of {VARIANTS}")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        widths = encoder.widths
        self.encoder, self.variant, self.spatial_dims = encoder, variant, spatial_dims
        self.latent_channels, self.sparsity_lambda, self.kl_beta = latent_channels, sparsity_lambda, kl_beta
        self.noise, self.noise_level = noise, noise_level
        self.to_latent = conv(widths[-1], latent_channels * (2 if variant == "variational" else 1), 1)
        self.from_latent = conv(latent_channels, widths[-1], 1)
        self.decoder = ReconstructionDecoder(widths, in_channels, spatial_dims, norm, encoder.pools)
        self.divisor = total_stride(encoder.pools)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``reconstruction`` and ``z`` (plus ``mu`` and ``logvar`` for the VAE)."""
        code = self.to_latent(self.encoder(x)[-1])
        out: dict[str, torch.Tensor] = {}
        if self.variant == "variational":
            mu, logvar = code.chunk(2, dim=1)
            logvar = logvar.clamp(-20.0, 20.0)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
            out.update(mu=mu, logvar=logvar)
        else:
            z = code
        out["z"] = z
        out["reconstruction"] = self.decoder(self.from_latent(z))
        return out

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The denoising AE's input: ``x`` with the configured noise (other variants: ``x`` itself)."""
        if self.variant != "denoising":
            return x
        if self.noise == "gaussian":
            return x + self.noise_level * torch.randn_like(x)
        keep = torch.rand_like(x) >= self.noise_level
        if self.noise == "masking":
            return x * keep
        extremes = torch.where(torch.rand_like(x) < 0.5, x.amin(), x.amax())  # salt_pepper
        return torch.where(keep, x, extremes)

    def loss(self, target: torch.Tensor, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts: mean squared error, plus L1(z) (sparse) or beta * KL (variational)."""
        mse = torch.mean((out["reconstruction"].float() - target.float()) ** 2)
        parts = {"reconstruction": mse}
        if self.variant == "sparse":
            parts["l1"] = self.sparsity_lambda * out["z"].abs().mean()
        if self.variant == "variational":
            parts["kl"] = self.kl_beta * kl_to_standard_normal(out["mu"], out["logvar"]) / target[0].numel()
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    @torch.no_grad()
    def sample(self, count: int, spatial_shape: tuple[int, ...]) -> torch.Tensor:
        """Decode ``count`` draws of z ~ N(0, I) (variational only) for an image of ``spatial_shape``.

        Raises:
            ValueError: the variant is not variational.
        """
        if self.variant != "variational":
            raise ValueError("only the variational autoencoder has a prior to sample from")
        latent_shape = tuple(s // d for s, d in zip(spatial_shape, self.divisor))
        device = next(self.parameters()).device
        z = torch.randn(count, self.latent_channels, *latent_shape, device=device)
        return self.decoder(self.from_latent(z))


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent elements, averaged over the batch."""
    per_element = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    return per_element.flatten(1).sum(1).mean()


def build_encoder(settings, in_channels: int) -> nn.Module:
    """The encoder a ``unet2d`` or ``vnet3d`` of the same settings would have (same class, same keys)."""
    if settings.encoder == "unet2d":
        return UNetEncoder2d(
            in_channels, tuple(settings.widths), settings.norm, settings.pools, settings.kernels, settings.activation
        )
    return VNetEncoder3d(
        in_channels,
        tuple(settings.widths),
        tuple(settings.convs),
        settings.kernel_size,
        settings.norm,
        settings.pools,
        settings.kernels,
    )
