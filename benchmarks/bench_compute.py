"""The bare training step on the CPU: eager PyTorch vs channels-last vs ``torch.compile`` (inductor), side by side.

Issue 15 asks for ``torch.compile`` "if it pays on CPU (measure, keep only what wins)", with results identical to
today's engine where the work is the same. For each planned network (``configs/<model>.yaml`` resolved against
``reports/plan/plans.json``: widths, strides, patch, batch and 2.5D input as ``dvc repro`` trains them) this times the
step the engine runs, forward + loss + backward + AdamW, on one seeded batch:

* ``eager``: what the engine runs today;
* ``channels_last``: model and batch in channels-last memory format (``channels_last_3d`` for the V-Net);
* ``compile``: ``torch.compile(model)`` (inductor, default mode); the first steps, which compile, are timed apart.

Every variant starts from the same seeded weights and batch and runs the same steps; afterwards its weights are compared
with eager's (``identical``: every parameter bit for bit; ``max_abs_weight_difference``, for scale: AdamW moves a weight
by at most about ``lr`` per step). A variant that changes the bits would change
the committed ``dvc repro`` results, so it is adopted only if it is both faster and identical.

Usage: python benchmarks/bench_compute.py [--models unet2d vnet3d] [--steps 8] [--variants eager channels_last compile]
Writes benchmarks/results/compute_cpu.json (quoted in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from pipeline.config import load_config, with_base_config
from pipeline.planning.planner import network_input_channels
from pipeline.planning.resolve import apply_plan

WARMUP_STEPS = 2  # allocator warm-up; for ``compile`` these are the steps that compile
INFERENCE_WINDOWS = 4  # infer.sw_batch_size: windows per forward pass of the sliding window


def planned_config(name: str):
    """The model's config as ``dvc repro`` trains it (plan applied, no encoder initialisation)."""
    cfg, _ = apply_plan(load_config(with_base_config([Path(f"configs/{name}.yaml")]), ["train.init_from=null"]))
    return cfg


def make_batch(cfg, in_channels: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded batch: smooth random images and a label map of ``num_classes`` classes (every class present)."""
    generator = torch.Generator().manual_seed(0)
    shape = (cfg.train.batch_size, in_channels, *cfg.train.patch_size)
    image = torch.randn(shape, generator=generator)
    smooth = torch.nn.functional.avg_pool3d if len(cfg.train.patch_size) == 3 else torch.nn.functional.avg_pool2d
    image = smooth(image, 3, stride=1, padding=1)
    edges = torch.quantile(image[:, :1].flatten()[:100_000], torch.linspace(0, 1, num_classes + 1)[1:-1])
    label = torch.bucketize(image[:, :1], edges)  # (B, 1, *patch), as the engine passes it
    return image, label


def time_inference(network: torch.nn.Module, windows: torch.Tensor, repeats: int = 3) -> dict:
    """Sliding-window work on the seeded (untrained, identical) weights: forward passes of ``infer.sw_batch_size``
    windows in eval mode without gradients, after one warm-up pass."""
    network.eval()
    with torch.no_grad():
        probabilities = torch.softmax(network(windows), dim=1)
        started = time.perf_counter()
        for _ in range(repeats):
            network(windows)
        seconds = time.perf_counter() - started
    network.train()
    return {"windows_per_s": round(repeats * len(windows) / seconds, 3), "probabilities": probabilities.contiguous()}


def run_variant(cfg, variant: str, steps: int, in_channels: int, num_classes: int) -> tuple[dict, dict, torch.Tensor]:
    """Time inference windows on the seeded weights, then ``steps`` training steps after the warm-up; return (timings,
    final weights, the inference probabilities)."""
    from pipeline.models import build_model
    from pipeline.training.losses import SegmentationLoss

    torch.manual_seed(cfg.base.seed)
    model = build_model(cfg.model, in_channels, num_classes)
    image, label = make_batch(cfg, in_channels, num_classes)
    if variant == "channels_last":
        memory_format = torch.channels_last if image.ndim == 4 else torch.channels_last_3d
        model, image = model.to(memory_format=memory_format), image.contiguous(memory_format=memory_format)
    network = torch.compile(model) if variant == "compile" else model
    inference = time_inference(network, image[:INFERENCE_WINDOWS])
    loss_fn = SegmentationLoss(cfg.loss)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    model.train()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(image).float(), label)
        loss.backward()
        optimizer.step()
        return float(loss)

    started = time.perf_counter()
    for _ in range(WARMUP_STEPS):
        step()
    warmup = time.perf_counter() - started
    started = time.perf_counter()
    losses = [step() for _ in range(steps)]
    seconds = time.perf_counter() - started
    samples = steps * cfg.train.batch_size
    timing = {
        "inference_windows_per_s": inference["windows_per_s"],
        "warmup_seconds": round(warmup, 2),
        "seconds": round(seconds, 3),
        "samples_per_s": round(samples / seconds, 3),
        "last_loss": losses[-1],
    }
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    return timing, weights, inference["probabilities"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["unet2d", "vnet3d"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=["eager", "channels_last", "compile"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compute_cpu.json"))
    args = parser.parse_args()
    from pipeline.runtime import pin_torch_threads
    from pipeline.training.data import read_manifest

    rows = []
    for name in args.models:
        cfg = planned_config(name)
        pin_torch_threads(cfg.base.torch_threads)
        manifest = read_manifest(cfg.preprocess.out_dir)  # the preprocessed data the network trains on
        in_channels = network_input_channels(len(manifest.modalities), cfg.model.context_slices)
        num_classes = manifest.num_classes
        reference = None
        for variant in ["eager", *(v for v in args.variants if v != "eager")]:
            timing, weights, probabilities = run_variant(cfg, variant, args.steps, in_channels, num_classes)
            if reference is None:
                reference = (timing, weights, probabilities)
            difference = max(float((weights[k].double() - reference[1][k].double()).abs().max()) for k in weights)
            row = {
                "model": name,
                "variant": variant,
                "patch_size": list(cfg.train.patch_size),
                "batch_size": cfg.train.batch_size,
                "in_channels": in_channels,
                **timing,
                "speedup_vs_eager": round(timing["samples_per_s"] / reference[0]["samples_per_s"], 3),
                "identical": all(torch.equal(weights[k], reference[1][k]) for k in weights),
                "max_abs_weight_difference": difference,
                "inference_speedup_vs_eager": round(
                    timing["inference_windows_per_s"] / reference[0]["inference_windows_per_s"], 3
                ),
                "inference_max_abs_probability_difference": float((probabilities - reference[2]).abs().max()),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": platform.platform(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup_steps": WARMUP_STEPS,
        "rows": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
