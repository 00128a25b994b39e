"""Overlays are radiological (patient right on screen left, anterior up) and in the registry's colours."""

from __future__ import annotations

import numpy as np

from pipeline.data.labels import LabelRegistry
from pipeline.evaluation.figures import colourise, radiological, save_overlay, save_training_curves


def test_radiological_display_puts_patient_right_on_screen_left_and_anterior_up():
    slice_xy = np.zeros((5, 4))
    slice_xy[4, 3] = 1  # RAS: largest x = patient right, largest y = anterior
    shown = radiological(slice_xy)
    assert shown.shape == (4, 5) and shown[0, 0] == 1  # top-left of the screen


def test_colourise_uses_label_colours_and_leaves_background_clear():
    registry = LabelRegistry.from_mapping({0: "background", 1: "liver", 2: "spleen"})
    rgba = colourise(np.array([[0, 1, 2]]), registry)
    assert rgba[0, 0, 3] == 0
    assert np.allclose(rgba[0, 1, :3] * 255, (221, 130, 101)) and np.allclose(rgba[0, 2, :3] * 255, (157, 108, 162))


def test_pngs_are_written(tmp_path):
    registry = LabelRegistry.from_mapping({0: "background", 1: "liver"})
    label = np.zeros((20, 16), np.uint8)
    label[5:10, 5:10] = 1
    save_overlay(tmp_path / "o.png", np.random.default_rng(0).normal(size=(20, 16)), label, label, registry, "case")
    save_training_curves(
        tmp_path / "c.png", [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5, "val_dice_mean": 0.7}]
    )
    for name in ("o.png", "c.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
