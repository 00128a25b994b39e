"""ONNX Runtime backend: parity with PyTorch over a whole scan (max |dp| <= 1e-4), free batch and spatial axes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import InferSettings, VNet3dSettings
from pipeline.errors import InvalidInputError
from pipeline.inference.onnx_backend import ONNX_FILE, OnnxNetwork, export_onnx
from pipeline.inference.predict import load_predictor, segment_scan
from pipeline.modelcard import read_model_card
from pipeline.models import build_model
from tests.inference.oracle import oblique_lps_affine, oracle_scan, write_tiny_model


def test_onnx_backend_matches_pytorch_over_a_scan(tmp_path):
    folder = write_tiny_model(tmp_path / "model")
    card = read_model_card(folder / "model_card.json")
    network = build_model(card.model, card.in_channels, card.num_classes)
    network.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    export_onnx(network, card.in_channels, card.patch_size, card.model.divisor, folder / ONNX_FILE)
    image, _ = oracle_scan()
    affine = oblique_lps_affine()
    results = {}
    for backend in ("torch", "onnx"):
        predictor = load_predictor(InferSettings(models=(folder,), device="cpu", backend=backend, largest_component=()))
        results[backend] = segment_scan(predictor, image[None].astype(np.float32), affine, probabilities=True)
    assert isinstance(load_predictor(InferSettings(models=(folder,), backend="onnx")).bundles[0].network, OnnxNetwork)
    difference = np.abs(results["onnx"].probabilities - results["torch"].probabilities).max()
    assert difference <= 1e-4, difference
    assert np.array_equal(results["onnx"].label, results["torch"].label)


def test_exported_3d_network_takes_any_batch_and_stride_multiple_sizes(tmp_path):
    pools, kernels = ((1, 1, 1), (2, 2, 1), (2, 2, 2)), ((3, 3, 1), (3, 3, 3), (3, 3, 3))
    settings = VNet3dSettings(widths=(4, 8, 16), convs=(1, 1, 1), pools=pools, kernels=kernels)
    torch.manual_seed(0)
    network = build_model(settings, 1, 3).eval()
    path = export_onnx(network, 1, (16, 16, 8), settings.divisor, tmp_path / ONNX_FILE)
    runtime = OnnxNetwork(path)
    for shape in ((1, 1, 16, 16, 8), (3, 1, 32, 24, 6)):  # divisor (4, 4, 2): any multiple along each axis
        x = torch.randn(*shape)
        with torch.no_grad():
            assert torch.allclose(runtime(x), network(x), atol=1e-4)
    with pytest.raises(InvalidInputError, match="no ONNX model"):
        OnnxNetwork(tmp_path / "absent.onnx")
