"""Inference on a CT-sized scan: the whole ``segpipe`` path vs MONAI's bare ``sliding_window_inference``.

The scan is a phantom rendered at 512 x 512 x 300 (0.7 x 0.7 x 0.8 mm, LPS), written as int16 NIfTI.
Each measurement runs in its own process so its peak RSS is its own:
* ``full``: read the NIfTI -> ``predict_scan`` (preprocess, input gate, sliding window, argmax of the
  probabilities restored to the original grid, the model's postprocessing) -> write the uint8 mask; timed as
  a whole, then step by step in a second pass;
* ``bare``: the same preprocessed tensor (prepared untimed) through ``sliding_window_inference`` with
  the same window, overlap, batch and Gaussian blending; the network only.

Usage: python benchmarks/bench_inference.py [--model models/vnet3d/fold_0] [--repeats 2]
       python benchmarks/bench_inference.py --untrained-overlay configs/gpu_vnet3d.yaml --spacing 1.5 1.5 1.5 \
           --repeats 1 --out benchmarks/results/inference_cpu_paper_vnet.json   (timing of a heavier network)
Writes benchmarks/results/inference_cpu.json (quoted in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SCAN = Path("data/bench/ct_512x512x300.nii.gz")


def make_scan(path: Path) -> None:
    """Render the CT-sized phantom once (about a minute)."""
    from pipeline.data.nifti import write_nifti
    from pipeline.data.phantom import CaseSpec, render_case

    spec = CaseSpec("ct_sized", 20261121, "LPS", (512, 512, 300), (0.7, 0.7, 0.8), 15.0)
    image, _, affine = render_case(spec, 20.0)
    write_nifti(path, image, affine, np.int16)


def _predictor(model: Path, threads: int):
    from pipeline.config import InferSettings
    from pipeline.inference.predict import load_predictor

    torch.set_num_threads(threads)
    return load_predictor(InferSettings(models=(model,), device="cpu"))


def run_full(model: Path, threads: int, out: Path) -> dict:
    """The user's path, timed whole, then the same steps timed one by one."""
    from pipeline.data.layout import Case
    from pipeline.data.nifti import write_nifti
    from pipeline.inference.postprocess import apply_postprocessing
    from pipeline.inference.predict import gate_scan, postprocessing_for, predict_probabilities, predict_scan
    from pipeline.preprocess.geometry import restore_argmax
    from pipeline.preprocess.reading import read_case
    from pipeline.preprocess.run import transform_case

    predictor = _predictor(model, threads)
    case = Case("bench", (SCAN,), None, "test")
    totals = []
    for _ in range(2):  # first = a fresh `segpipe predict` (cold torch kernels); second = warm, like the bare timing
        start = time.perf_counter()
        image, affine, _ = read_case(case, set())
        label = predict_scan(predictor, image, affine)
        write_nifti(out, label, affine, np.uint8)
        totals.append(round(time.perf_counter() - start, 3))

    steps, clock = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        steps[name] = round(now - clock, 3)
        clock = now

    image, affine, _ = read_case(case, set())
    lap("read")
    bundle = predictor.bundles[0]
    record, prepared, _ = transform_case(image, affine, None, bundle.plan)
    lap("preprocess")
    gate_scan(predictor, image, record)
    lap("input_gate")
    probabilities = predict_probabilities(predictor, bundle, prepared)
    lap("sliding_window")
    label = restore_argmax(probabilities, record)
    lap("restore_argmax")
    label = apply_postprocessing(label, postprocessing_for(predictor))
    lap("postprocessing")
    write_nifti(out, label, affine, np.uint8)
    lap("write")
    return {"cold_seconds": totals[0], "seconds": totals[1], "steps": steps, "preprocessed_shape": list(prepared.shape[1:])}


def run_bare(model: Path, threads: int) -> dict:
    """MONAI's sliding window on the already preprocessed tensor, nothing else."""
    from monai.inferers import sliding_window_inference

    from pipeline.data.layout import Case
    from pipeline.preprocess.reading import read_case
    from pipeline.preprocess.run import transform_case

    predictor = _predictor(model, threads)
    bundle = predictor.bundles[0]
    image, affine, _ = read_case(Case("bench", (SCAN,), None, "test"), set())
    _, prepared, _ = transform_case(image, affine, None, bundle.plan)
    del image
    tensor = torch.from_numpy(prepared)[None]
    settings = predictor.settings
    totals = []
    for _ in range(2):  # cold, then warm (like the two passes of the full path)
        start = time.perf_counter()
        with torch.no_grad():
            logits = sliding_window_inference(
                tensor, bundle.patch_size, settings.sw_batch_size, bundle.network, settings.overlap, "gaussian"
            )
        torch.softmax(logits, dim=1)
        totals.append(round(time.perf_counter() - start, 3))
    return {"cold_seconds": totals[0], "seconds": totals[1]}


def make_untrained_model(source: Path, overlay: Path, spacing: list[float] | None, folder: Path) -> Path:
    """A model folder like ``source`` but with the network and patch of ``overlay`` (seeded random weights): timing only."""
    import yaml
    from pydantic import TypeAdapter

    from pipeline.config import ModelSettings
    from pipeline.models import build_model

    card = json.loads((source / "model_card.json").read_text())
    extra = yaml.safe_load(overlay.read_text())
    card["model"].update(extra["model"])
    card["patch_size"] = extra["train"]["patch_size"]
    if spacing:
        card["target_spacing"] = card["preprocess"]["spacing_mm"] = spacing
    torch.manual_seed(0)
    network = build_model(TypeAdapter(ModelSettings).validate_python(card["model"]), card["in_channels"], card["num_classes"])
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), folder / "model.pt")
    (folder / "model_card.json").write_text(json.dumps(card))
    return folder


def _child(part: str, args) -> dict:
    command = [sys.executable, __file__, "--part", part, "--model", str(args.model), "--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/vnet3d/fold_0"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--untrained-overlay", type=Path, help="time an untrained network of this config overlay instead")
    parser.add_argument("--spacing", type=float, nargs=3, help="with --untrained-overlay: preprocessing spacing (mm)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/inference_cpu.json"))
    parser.add_argument("--part", choices=["full", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        row = (
            run_full(args.model, args.threads, SCAN.with_name("bench_mask.nii.gz"))
            if args.part == "full"
            else run_bare(args.model, args.threads)
        )
        row["peak_rss_gib"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
        )  # this process only (KiB on Linux)
        print(json.dumps(row))
        return
    if not SCAN.exists():
        make_scan(SCAN)
    if args.untrained_overlay:
        args.model = make_untrained_model(args.model, args.untrained_overlay, args.spacing, SCAN.parent / "untrained_model")
    bare = [_child("bare", args) for _ in range(args.repeats)]
    full = [_child("full", args) for _ in range(args.repeats)]
    best_full, best_bare = min(r["seconds"] for r in full), min(r["seconds"] for r in bare)
    result = {
        "scan": {"shape": [512, 512, 300], "spacing_mm": [0.7, 0.7, 0.8]},
        "model": str(args.model),
        "untrained_overlay": str(args.untrained_overlay) if args.untrained_overlay else None,
        "spacing_override_mm": args.spacing,
        "threads": args.threads,
        "full": full,
        "bare_sliding_window": bare,
        "best_full_seconds": best_full,
        "best_bare_seconds": best_bare,
        "ratio_full_to_bare": round(best_full / best_bare, 2),
        "peak_rss_gib_full": max(r["peak_rss_gib"] for r in full),
        "peak_rss_gib_bare": max(r["peak_rss_gib"] for r in bare),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    out = args.out
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("full", "bare_sliding_window")}, indent=2))


if __name__ == "__main__":
    main()
