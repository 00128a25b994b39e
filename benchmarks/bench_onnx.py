"""PyTorch vs ONNX Runtime as the inference backend, side by side in one process on the same scans and models (2 cores).

For each model folder (default: the trained U-Net and V-Net of fold 0): export ``model.onnx`` into a scratch copy of the
folder, then time :func:`segment_scan` (gate, sliding window, restore, argmax; no uncertainty maps) with each backend on
a phantom test scan and on the CT-sized scan of ``bench_inference.py``: the median of ``--repeats`` after a warm-up. The
parity column is the largest difference of the restored probabilities over the whole scan.

Usage: python benchmarks/bench_onnx.py [--model models/unet2d/fold_0 ...] [--repeats 3]
Writes benchmarks/results/onnx_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gate import median_seconds  # noqa: E402
from bench_inference import SCAN, make_scan  # noqa: E402

TEST_SCAN = Path("data/phantom/imagesTs/phantom_test_000.nii.gz")


def _with_onnx(folder: Path, scratch: Path) -> Path:
    from pipeline.inference.onnx_backend import ONNX_FILE, export_onnx
    from pipeline.modelcard import read_model_card
    from pipeline.models import build_model

    copy = scratch / f"{folder.parent.name}_{folder.name}"
    shutil.copytree(folder, copy)
    card = read_model_card(copy / "model_card.json")
    network = build_model(card.model, card.in_channels, card.num_classes)
    network.load_state_dict(torch.load(copy / "model.pt", weights_only=True))
    divisor = card.model.divisor
    export_onnx(network, card.in_channels, card.patch_size, divisor, copy / ONNX_FILE)
    return copy


def main() -> None:
    from pipeline.config import InferSettings
    from pipeline.data.layout import Case
    from pipeline.inference.predict import load_predictor, segment_scan
    from pipeline.preprocess.reading import read_case

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/onnx_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not SCAN.exists():
        make_scan(SCAN)
    models = args.model or [Path("models/unet2d/fold_0"), Path("models/vnet3d/fold_0")]
    scans = {name: read_case(Case(name, (path,), None, "test"), set())[:2] for name, path in
             (("phantom_test_000", TEST_SCAN), ("ct_512x512x300", SCAN))}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for folder in models:
            copy = _with_onnx(folder, Path(scratch))
            for scan_name, (image, affine) in scans.items():
                row = {"model": str(folder), "scan": scan_name, "shape": list(image.shape[1:])}
                outputs = {}
                for backend in ("torch", "onnx"):
                    settings = InferSettings(models=(copy,), device="cpu", backend=backend, largest_component=())
                    predictor = load_predictor(settings)

                    def run(predictor=predictor, image=image, affine=affine):
                        return segment_scan(predictor, image, affine, force=True, uncertainty=False)

                    row[f"{backend}_s"] = round(median_seconds(run, args.repeats), 3)
                    outputs[backend] = segment_scan(predictor, image, affine, force=True, uncertainty=False, probabilities=True)
                row["speedup_onnx"] = round(row["torch_s"] / row["onnx_s"], 2)
                row["max_abs_probability_difference"] = float(
                    np.abs(outputs["onnx"].probabilities - outputs["torch"].probabilities).max()
                )
                row["labels_identical"] = bool(np.array_equal(outputs["onnx"].label, outputs["torch"].label))
                rows.append(row)
                print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": 2, "repeats": args.repeats, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
