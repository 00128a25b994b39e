"""Scan-level prediction: the inversion of preprocessing is exact (oracle network), ensembling, mirroring, postprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from pipeline.config import InferSettings
from pipeline.data.labels import LabelRegistry
from pipeline.evaluation.metrics import dice_per_class
from pipeline.inference.bundle import ModelBundle
from pipeline.inference.postprocess import PostprocessingDecision, apply_postprocessing
from pipeline.inference.predict import Predictor, postprocessing_for, predict_scan
from pipeline.inference.sliding import predict_volume_mirrored
from tests.inference.oracle import LABELS, oblique_lps_affine, oracle_plan, oracle_predictor, oracle_scan


def permuted_axes_affine() -> np.ndarray:
    """Array axes running posterior, inferior, right (codes P, I, R): permuted and flipped against RAS (row G7)."""
    affine = np.zeros((4, 4))
    affine[:3, :3] = [[0.0, 0.0, 2.5], [-1.2, 0.0, 0.0], [0.0, -1.4, 0.0]]
    affine[:, 3] = [-30.0, 12.0, 80.0, 1.0]
    return affine


@pytest.mark.parametrize(("dims", "context"), [(3, 0), (2, 0), (2, 1)], ids=["3d", "2d", "2.5d"])
@pytest.mark.parametrize("geometry", ["oblique_lps", "permuted_axes"])
def test_oracle_gives_dice_one_at_native_spacing_on_oblique_and_permuted_scans(dims, context, geometry):
    image, truth = oracle_scan()
    affine = oblique_lps_affine() if geometry == "oblique_lps" else permuted_axes_affine()
    label = predict_scan(oracle_predictor(affine, dims=dims, context=context), image[None], affine)
    assert label.shape == truth.shape and label.dtype == np.uint8
    dice = dice_per_class(torch.from_numpy(label), torch.from_numpy(truth), 3)
    assert dice.tolist() == [1.0, 1.0]


def test_oracle_through_a_coarser_grid_lands_on_the_scan():
    image, truth = oracle_scan(shape=(40, 36, 16))
    affine = oblique_lps_affine(spacing=(1.0, 1.0, 2.5))
    label = predict_scan(oracle_predictor(affine, spacing=(2.0, 2.0, 2.5)), image[None], affine)
    assert label.shape == truth.shape
    # Partial volume on a 2 mm grid blurs the 1-voxel rim of 9-voxel boxes; the interior must be exact (no shift).
    for value in (1, 2):
        interior = ndimage.binary_erosion(truth == value, iterations=1)
        assert (label[interior] == value).all()
    dice = dice_per_class(torch.from_numpy(label), torch.from_numpy(truth), 3)
    assert (dice > 0.85).all(), dice


class ConstantLogits(nn.Module):
    """Every voxel gets the same logits (a 3D network)."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits, dtype=torch.float32))

    def forward(self, x):
        return self.logits.view(1, -1, 1, 1, 1).expand(x.shape[0], -1, *x.shape[2:]).clone()


def test_ensemble_averages_probabilities_before_the_argmax():
    image, _ = oracle_scan()
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    plan = oracle_plan(affine)
    registry = LabelRegistry.from_mapping(LABELS)
    # softmax: model A = (0.09, 0.67, 0.24), model B = (0.09, 0.0, 0.91) -> mean favours spleen (2), A alone liver (1)
    a = ModelBundle(None, ConstantLogits([0.0, 2.0, 1.0]), plan, registry, ("CT",), (16, 16, 8), 0)
    b = ModelBundle(None, ConstantLogits([0.0, -10.0, 2.3]), plan, registry, ("CT",), (16, 16, 8), 0)
    cpu = torch.device("cpu")
    settings = InferSettings(largest_component=())
    only_a = predict_scan(Predictor((a,), settings, cpu, cpu, None), image[None], affine)
    both = predict_scan(Predictor((a, b), settings, cpu, cpu, None), image[None], affine)
    body = image > -500
    assert (only_a[body] == 1).all()
    assert (both[body] == 2).all()
    assert (both[0] == 0).all() and (both[-1] == 0).all()  # outside the body crop (2 mm margin): background


class Ramp(nn.Module):
    """Class-1 logit grows along x: a prediction that is not mirror-symmetric."""

    def forward(self, x):
        ramp = torch.linspace(-3.0, 3.0, x.shape[2]).view(1, 1, -1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return torch.cat([torch.zeros_like(ramp), ramp], dim=1)


def test_mirroring_averages_the_flipped_predictions():
    image = torch.zeros(1, 16, 8, 8)
    plain = predict_volume_mirrored(Ramp(), image, (), patch_size=(16, 8, 8), overlap=0.0)
    mirrored = predict_volume_mirrored(Ramp(), image, (0,), patch_size=(16, 8, 8), overlap=0.0)
    expected = 0.5 * (plain + torch.flip(plain, [1]))
    assert torch.allclose(mirrored, expected, atol=1e-6)
    assert torch.allclose(mirrored[1], torch.full_like(mirrored[1], 0.5), atol=1e-6)  # a ramp and its mirror cancel
    assert not torch.allclose(plain[1], mirrored[1])


def test_largest_component_is_kept_for_the_named_classes_or_where_every_model_decided_it():
    from types import SimpleNamespace

    label = np.zeros((20, 20, 10), dtype=np.uint8)
    label[1:8, 1:8, 1:8] = 1  # liver, large
    label[15:17, 15:17, 2:4] = 1  # liver, stray island
    label[10:13, 1:4, 1:4] = 2  # spleen
    label[1:3, 15:17, 5:7] = 2  # a second spleen island
    registry = LabelRegistry.from_mapping(LABELS)

    def predictor(choice, *decisions):
        bundles = tuple(SimpleNamespace(labels=registry, postprocessing=d) for d in decisions or [None])
        return Predictor(bundles, InferSettings(largest_component=choice), None, None, None)

    kept = apply_postprocessing(label, postprocessing_for(predictor(("liver",))))
    assert (kept[15:17, 15:17, 2:4] == 0).all() and (kept[1:8, 1:8, 1:8] == 1).all()
    assert (kept == 2).sum() == (label == 2).sum()  # spleen not named: untouched
    both = apply_postprocessing(label, postprocessing_for(predictor(("liver", "spleen", "pancreas"))))
    assert (both[1:3, 15:17, 5:7] == 0).all() and (both[10:13, 1:4, 1:4] == 2).all()
    auto = postprocessing_for(predictor("auto", PostprocessingDecision(False, (1, 2)), PostprocessingDecision(True, (1,))))
    assert auto == PostprocessingDecision(False, (1,))  # only what every model of the ensemble chose
