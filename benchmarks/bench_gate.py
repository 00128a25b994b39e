"""What the input gate and the uncertainty maps add to ``predict`` on a CT-sized scan (512 x 512 x 300), side by side.

In one process, on the same scan and model (default: what cross-validation chose, ``infer.models: auto``):
* ``predict``: :func:`segment_scan` as ``segpipe predict`` runs it (gate, segmentation, entropy and mutual information);
* ``predict without uncertainty``: the same with ``uncertainty=False``;
* ``gate``: the gate's own work (strided percentiles of the scan and the envelope checks; the body crop it reads
  is computed by preprocessing anyway).
Each is the median of ``--repeats`` runs after one warm-up. Target (issue 14): the gate adds <= 5 % to ``predict``.

Usage: python benchmarks/bench_gate.py [--model models/unet2d/fold_0] [--repeats 3]
Writes benchmarks/results/gate_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inference import SCAN, make_scan  # noqa: E402


def median_seconds(function, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from pipeline.config import load_config
    from pipeline.data.layout import Case
    from pipeline.inference.predict import gate_scan, load_predictor, segment_scan
    from pipeline.preprocess.reading import read_case
    from pipeline.preprocess.run import transform_case

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", help="model folder (default: crossval's decisions)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gate_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    if not SCAN.exists():
        make_scan(SCAN)
    cfg = load_config()
    update = {"device": "cpu", **({"models": tuple(args.model)} if args.model else {})}
    settings = cfg.infer.model_copy(update=update)
    predictor = load_predictor(settings, cfg.crossval.decisions)
    image, affine, _ = read_case(Case("bench", (SCAN,), None, "test"), set())
    record = transform_case(image, affine, None, predictor.bundles[0].plan)[0]
    verdict = gate_scan(predictor, image, record)
    seconds = {
        "predict": median_seconds(lambda: segment_scan(predictor, image, affine, force=True), args.repeats),
        "predict_without_uncertainty": median_seconds(
            lambda: segment_scan(predictor, image, affine, force=True, uncertainty=False), args.repeats
        ),
        "gate": median_seconds(lambda: gate_scan(predictor, image, record), args.repeats),
    }
    result = {
        "scan": {"shape": list(image.shape[1:]), "spacing_mm": np.round(np.linalg.norm(affine[:3, :3], axis=0), 3).tolist()},
        "models": [str(b.folder) for b in predictor.bundles],
        "gate_verdict": verdict.to_json(),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "gate_share_of_predict": round(seconds["gate"] / seconds["predict"], 4),
        "uncertainty_share_of_predict": round(1 - seconds["predict_without_uncertainty"] / seconds["predict"], 4),
        "threads": 2,
        "machine": platform.processor() or platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
