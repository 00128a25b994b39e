"""Sliding-window prediction covers the whole volume and feeds 2.5D slabs exactly as training does."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.inference.sliding import predict_volume
from pipeline.training.data import CaseArrays, PatchDataset


class SliceEcho(torch.nn.Module):
    """A fake 2D network: class logits = the input channels (so the output reveals what it was fed)."""

    def forward(self, x):
        return x * 50.0


def test_2d_prediction_stacks_neighbours_like_training_and_restores_the_volume_layout():
    image = np.zeros((1, 12, 10, 6), dtype=np.float32)
    for z in range(6):
        image[0, :, :, z] = z + 1
    probs = predict_volume(SliceEcho(), torch.from_numpy(image), (8, 8), context_slices=1, overlap=0.5)
    assert probs.shape == (3, 12, 10, 6)
    assert torch.allclose(probs.sum(0), torch.ones(12, 10, 6))
    # slice z was fed [z-1, z, z+1] + 1 (0 outside): the largest channel is always the one above, except at the top
    winner = probs.argmax(0)
    assert (winner[..., :5] == 2).all() and (winner[..., 5] == 1).all()
    # identical stacking in the training sampler
    case = CaseArrays("c", image, np.ones((12, 10, 6), np.uint8), {1: np.argwhere(np.ones((12, 10, 6)))})
    sample = PatchDataset([case], (8, 8), 1, 1.0, 1, seed=0)[0]["image"]
    z = int(sample[1].max().item()) - 1
    assert sample[0].max().item() == (z if z > 0 else 0) and sample[2].max().item() == (z + 2 if z < 5 else 0)


def test_3d_prediction_tiles_a_volume_larger_than_the_window():
    class Threshold(torch.nn.Module):
        def forward(self, x):
            return torch.cat([-x, x], dim=1) * 10

    image = torch.zeros(1, 20, 18, 9)
    image[0, 12:, :, :] = 1.0
    image[0, :12, :, :] = -1.0
    probs = predict_volume(Threshold(), image, (8, 8, 8), overlap=0.25)
    assert probs.shape == (2, 20, 18, 9)
    assert (probs.argmax(0)[12:] == 1).all() and (probs.argmax(0)[:12] == 0).all()


def test_2d_prediction_across_another_axis_equals_predicting_the_transposed_volume():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.normal(size=(1, 9, 12, 10)).astype(np.float32))
    torch.manual_seed(0)
    network = torch.nn.Conv2d(3, 3, 3, padding=1)  # in-plane context: a wrong slicing order would show
    for axis in (0, 1):
        ours = predict_volume(network, image, (8, 8), context_slices=1, overlap=0.5, slice_axis=axis)
        by_hand = predict_volume(network, image.movedim(axis + 1, -1), (8, 8), context_slices=1, overlap=0.5)
        assert ours.shape == (3, 9, 12, 10)
        assert torch.allclose(ours, by_hand.movedim(-1, axis + 1), atol=1e-6)
    assert not torch.allclose(  # and slicing across x is not slicing across z
        predict_volume(network, image, (8, 8), context_slices=1, slice_axis=0),
        predict_volume(network, image, (8, 8), context_slices=1),
    )


def test_training_patches_across_x_are_sagittal_slices_with_their_label():
    shape = (5, 12, 10)
    coordinates = np.indices(shape)
    image = (coordinates[0] * 10000 + coordinates[1] * 100 + coordinates[2]).astype(np.float32)[None]
    label = (coordinates[1] > 5).astype(np.uint8)
    case = CaseArrays("c", image, label, {1: np.argwhere(label == 1)})
    for index in range(6):
        sample = PatchDataset([case], (8, 6), 1, 1.0, 6, seed=0, slice_axis=0)[index]
        centre, patch = sample["image"][1].numpy(), sample["label"][0].numpy()
        inside = centre != 0  # padding outside the volume is 0
        x = np.unique(centre[inside] // 10000)
        assert len(x) == 1  # one sagittal slice ...
        assert (sample["image"][0].numpy()[inside] // 10000 == x[0] - 1).all() or x[0] == 0  # ... its neighbours beside it
        y, z = (centre // 100) % 100, centre % 100
        assert (np.diff(y[:, 0][inside[:, 0]]) == 1).all() and (np.diff(z[0][inside[0]]) == 1).all()  # patch axes: (y, z)
        assert np.array_equal(patch[inside], (y[inside] > 5).astype(np.uint8))
