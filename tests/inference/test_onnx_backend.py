"""ONNX Runtime backend: parity with PyTorch over a whole scan (max |dp| <= 1e-4), free batch and spatial axes."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

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
    with warnings.catch_warnings():  # the exporter's own deprecation notice is not shown to users (every training run)
        warnings.simplefilter("error", FutureWarning)
        path = export_onnx(network, 1, (16, 16, 8), settings.divisor, tmp_path / ONNX_FILE)
    runtime = OnnxNetwork(path)
    for shape in ((1, 1, 16, 16, 8), (3, 1, 32, 24, 6)):  # divisor (4, 4, 2): any multiple along each axis
        x = torch.randn(*shape)
        with torch.no_grad():
            assert torch.allclose(runtime(x), network(x), atol=1e-4)
    with pytest.raises(InvalidInputError, match="no ONNX model"):
        OnnxNetwork(tmp_path / "absent.onnx")


EXPORT_SCRIPT = """
import sys, torch
from pathlib import Path
from pipeline.config import VNet3dSettings
from pipeline.inference.onnx_backend import export_onnx
from pipeline.models import build_model
settings = VNet3dSettings(widths=(4, 8, 16), convs=(1, 1, 1), pools=((1, 1, 1), (2, 2, 1), (2, 2, 2)),
                          kernels=((3, 3, 1), (3, 3, 3), (3, 3, 3)))
torch.manual_seed(0)
export_onnx(build_model(settings, 1, 3).eval(), 1, (16, 16, 8), settings.divisor, Path(sys.argv[1]))
"""


def test_two_exports_of_the_same_network_from_two_checkouts_and_hash_seeds_are_equal_files(tmp_path):
    """dvc.lock holds model.onnx's hash: another process (string hashing) and another checkout folder (the exporter's
    stack traces held absolute paths) must write the same bytes."""
    import shutil

    root = Path(__file__).resolve().parents[2]
    elsewhere = tmp_path / "another_checkout"
    shutil.copytree(root / "pipeline", elsewhere / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    paths = []
    for hash_seed, checkout in (("1", root), ("2", elsewhere)):
        path = tmp_path / hash_seed / ONNX_FILE
        path.parent.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(checkout)}
        subprocess.run([sys.executable, "-c", EXPORT_SCRIPT, str(path)], check=True, env=env, capture_output=True)
        paths.append(path)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert str(root).encode() not in paths[0].read_bytes() and str(elsewhere).encode() not in paths[1].read_bytes()
