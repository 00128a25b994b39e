"""The autoencoder family: builds in 2D and 3D, learns, and each variant's loss is what it claims."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import PipelineConfig
from pipeline.models import build_model
from pipeline.models.autoencoders import kl_to_standard_normal


def _ae(variant: str, encoder: str = "vnet3d", **extra):
    dims = 2 if encoder == "unet2d" else 3
    model = {"name": "autoencoder", "variant": variant, "encoder": encoder, "widths": [4, 8, 16], "convs": [1, 1, 1], **extra}
    cfg = PipelineConfig.model_validate({"model": model, "train": {"patch_size": [16] * dims}})
    return build_model(cfg.model, 1, 0), dims


@pytest.mark.parametrize("encoder", ["unet2d", "vnet3d"])
@pytest.mark.parametrize("variant", ["undercomplete", "sparse", "denoising", "variational"])
def test_every_variant_builds_is_undercomplete_and_a_few_steps_lower_its_loss(variant, encoder):
    torch.manual_seed(0)
    model, dims = _ae(variant, encoder, latent_channels=2)
    x = torch.zeros(4, 1, *[16] * dims)
    x[(slice(None), 0, *[slice(4, 12)] * dims)] = 1.0
    out = model(x)
    assert out["reconstruction"].shape == x.shape and out["z"][0].numel() < x[0].numel() // 4
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        loss, _ = model.loss(x, model(model.corrupt(x)))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_sparse_loss_adds_lambda_times_the_mean_absolute_code():
    model, _ = _ae("sparse", sparsity_lambda=0.5)
    x = torch.randn(2, 1, 16, 16, 16)
    out = model(x)
    total, parts = model.loss(x, out)
    mse = torch.mean((out["reconstruction"] - x) ** 2)
    assert parts["l1"] == pytest.approx(0.5 * out["z"].abs().mean().item(), rel=1e-5)
    assert total.item() == pytest.approx(mse.item() + 0.5 * out["z"].abs().mean().item(), rel=1e-5)


@pytest.mark.parametrize("noise", ["gaussian", "salt_pepper", "masking"])
def test_denoising_input_is_corrupted_and_target_stays_clean(noise):
    model, _ = _ae("denoising", noise=noise, noise_level=0.3)
    x = torch.rand(2, 1, 16, 16, 16) + 1.0
    noisy = model.corrupt(x)
    changed = (noisy != x).float().mean().item()
    assert 0.2 < changed <= 1.0 and x.min().item() >= 1.0  # input noised, clean tensor untouched
    if noise == "masking":
        assert (noisy[noisy != x] == 0).all()
    assert torch.equal(_ae("undercomplete")[0].corrupt(x), x)


def test_kl_of_a_known_gaussian():
    mu, logvar = torch.full((1, 4), 1.0), torch.full((1, 4), 0.0)  # N(1, 1) vs N(0, 1): 0.5 per element
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx(4 * 0.5)
    var = torch.tensor(2.0)
    expected = 0.5 * (var - 1 - torch.log(var)).item()  # N(0, 2) vs N(0, 1)
    assert kl_to_standard_normal(torch.zeros(1, 1), torch.log(var).reshape(1, 1)).item() == pytest.approx(expected)
    assert kl_to_standard_normal(torch.zeros(3, 5), torch.zeros(3, 5)).item() == 0.0


def test_vae_samples_from_the_prior_and_others_refuse():
    vae, _ = _ae("variational")
    samples = vae.eval().sample(3, (16, 16, 16))
    assert samples.shape == (3, 1, 16, 16, 16) and torch.isfinite(samples).all()
    assert not torch.equal(samples[0], samples[1])
    with pytest.raises(ValueError, match="only the variational"):
        _ae("sparse")[0].sample(1, (16, 16, 16))
