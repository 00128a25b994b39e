"""Train-free inference helpers: a phantom whose labels are a function of intensity, and networks that read them off.

With a fixed CT window the three tissue levels normalise to 0.4 (body), 0.65 (liver) and 0.9
(spleen); air clips to 0. An "oracle" network returns logits that pick the nearest level, so its
prediction on the preprocessed grid is exactly the preprocessed ground truth, and any error after
inversion comes from the inversion alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from pipeline.config import InferSettings, PreprocessSettings, UNet2dSettings
from pipeline.data.labels import LabelRegistry
from pipeline.inference.bundle import ModelBundle
from pipeline.inference.predict import Predictor
from pipeline.modelcard import ModelCard, write_model_card
from pipeline.models import build_model
from pipeline.preprocess.geometry import ras_spacing
from pipeline.preprocess.run import Plan

LABELS = {0: "background", 1: "liver", 2: "spleen"}
TISSUE_HU = (0.0, 100.0, 200.0)
WINDOW_HU = (-160.0, 240.0)
LEVELS = torch.tensor([(hu - WINDOW_HU[0]) / (WINDOW_HU[1] - WINDOW_HU[0]) for hu in TISSUE_HU])


def oblique_lps_affine(spacing=(1.6, 1.3, 3.0), degrees=20.0, origin=(40.0, -25.0, 60.0)) -> np.ndarray:
    """An LPS-stored (x and y flipped) grid rotated ``degrees`` about z: the geometry that hides no bug."""
    affine = np.eye(4)
    rotation = Rotation.from_euler("z", degrees, degrees=True).as_matrix()
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rotation @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def oracle_scan(shape=(30, 26, 14)) -> tuple[np.ndarray, np.ndarray]:
    """(HU image, label): air around a body block holding a liver box and a spleen box."""
    image = np.full(shape, -1000.0, dtype=np.float32)
    image[2:-2, 2:-2, 1:-1] = TISSUE_HU[0]
    label = np.zeros(shape, dtype=np.uint8)
    label[5:14, 4:12, 3:9] = 1
    label[16:25, 10:20, 5:11] = 2
    for value in (1, 2):
        image[label == value] = TISSUE_HU[value]
    return image, label


class Oracle(nn.Module):
    """Logits that pick the nearest tissue level of the (centre) input channel; 2D or 3D."""

    def __init__(self, centre_channel: int = 0):
        super().__init__()
        self.centre_channel = centre_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, self.centre_channel : self.centre_channel + 1]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return -100.0 * (centre - LEVELS.view(shape).to(x)).abs()


def oracle_plan(affine: np.ndarray, spacing: tuple[float, float, float] | None = None) -> Plan:
    """Window normalisation at the scan's own spacing (``None``) or the given one."""
    target = tuple(ras_spacing(affine)) if spacing is None else spacing
    settings = PreprocessSettings(ct_normalisation="window", ct_window_hu=WINDOW_HU, spacing_mm=target, crop_margin_mm=2.0)
    return Plan(settings, target, None, True, frozenset(LABELS), 3, Path("."), "oracle")


def oracle_predictor(affine: np.ndarray, spacing=None, dims: int = 3, context: int = 0, **settings) -> Predictor:
    """A one-model ensemble of the oracle, 3D (patch 16x16x8) or 2D/2.5D (patch 16x16)."""
    patch = (16, 16, 8) if dims == 3 else (16, 16)
    bundle = ModelBundle(
        Path("oracle"), Oracle(context), oracle_plan(affine, spacing), LabelRegistry.from_mapping(LABELS), ("CT",), patch, context
    )
    return Predictor((bundle,), InferSettings(largest_component=(), **settings), torch.device("cpu"), torch.device("cpu"), None)


def write_tiny_model(folder: Path, seed: int = 0, envelope=None) -> Path:
    """A randomly initialised 2-level U-Net saved like ``segpipe train`` saves one (model.pt + model_card.json), with the
    input gate's ``envelope`` when given."""
    torch.manual_seed(seed)
    settings = UNet2dSettings(widths=(4, 8), norm="batch")
    network = build_model(settings, 1, 3)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), folder / "model.pt")
    card = ModelCard(
        model=settings,
        in_channels=1,
        num_classes=3,
        labels={str(k): v for k, v in LABELS.items()},
        modalities=("CT",),
        patch_size=(32, 32),
        target_spacing=(3.0, 3.0, 4.0),
        preprocess=PreprocessSettings(ct_normalisation="window", spacing_mm=(3.0, 3.0, 4.0)),
        envelope=envelope,
    )
    write_model_card(card, folder / "model_card.json")
    return folder
