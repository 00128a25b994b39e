"""The natural-image architectures side by side: parameters at paper settings, CPU forward time, mIoU after an equal budget.

For each architecture of ``configs/natural/``:
* parameters at the paper's settings (the config's model section) for the paper's number of classes;
* forward time of one 256 x 256 RGB image at those settings (batch 1, eval mode, median of 3 after a warm-up);
* test mIoU and pixel accuracy on the generated scenes (the 40 ``val`` scenes) after the same wall-clock training
  budget (``--minutes``) through ``segpipe train``'s engine, at reduced CPU widths (``CPU_WIDTHS``; paper widths do not
  train in minutes on 2 cores), with everything else from the architecture's config.

Usage: python benchmarks/bench_natural.py [--minutes 2] [--only fcn8s segnet ...]
Needs the scenes: segpipe scenes && segpipe prepare-natural. Writes benchmarks/results/natural_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline.config import load_config, with_base_config
from pipeline.models import build_model
from pipeline.training.engine import train_model

PAPER_CLASSES = {"segnet": 11, "setr_naive": 150, "setr_pup": 150, "setr_mla": 150, "swin_upernet": 150, "pspnet": 150}
VGG = {"widths": [16, 32, 64, 128, 128]}
RESNET = {"depth": 18, "width": 16}
VIT = {"hidden_size": 192, "mlp_dim": 768, "num_layers": 8, "num_heads": 3, "decoder_channels": 64}
CPU_WIDTHS = {
    "fcn32s": {**VGG, "fc_width": 256},
    "fcn16s": {**VGG, "fc_width": 256},
    "fcn8s": {**VGG, "fc_width": 256},
    "deconvnet": {**VGG, "fc_width": 256},
    "segnet": VGG,
    "unet2d": {"widths": [16, 32, 64, 128, 256]},
    "pspnet": {**RESNET, "head_channels": 64},
    "deeplabv1": {**VGG, "fc_width": 256},
    "deeplabv2": RESNET,
    "deeplabv3": {**RESNET, "aspp_channels": 64},
    "deeplabv3plus": {**RESNET, "aspp_channels": 64, "low_level_channels": 24},
    "setr_naive": VIT,
    "setr_pup": VIT,
    "setr_mla": VIT,
    "swin_upernet": {
        "embed_dim": 24,
        "depths": [2, 2, 2, 2],
        "num_heads": [1, 2, 4, 8],
        "window_size": 8,
        "decoder_channels": 64,
    },
}


def paper_model(name: str):
    cfg = load_config(with_base_config([Path(f"configs/natural/{name}.yaml")]))
    return build_model(cfg.model, 3, PAPER_CLASSES.get(name, 21))


def forward_seconds(model: torch.nn.Module) -> float:
    model.eval()
    image = torch.randn(1, 3, 256, 256)
    times = []
    with torch.no_grad():
        model(image)
        for _ in range(3):
            start = time.perf_counter()
            model(image)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def short_training(name: str, minutes: float, work: Path) -> dict:
    overrides = [f"model.{key}={json.dumps(value)}" for key, value in CPU_WIDTHS[name].items()]
    overrides += [
        f"train.max_time_minutes={minutes}",
        "train.max_epochs=1000",
        "train.batch_size=4",
        "train.val_every=1000",  # no validation inside the budget; the final validation picks the last epoch
        "train.overlay_cases=0",
        f"train.out_dir={work / name / 'model'}",
        f"train.checkpoint_dir={work / name / 'checkpoints'}",
        f"train.reports_dir={work / name / 'reports'}",
        "tracking.experiment=natural-bench",
        "tracking.log_model=false",
    ]
    cfg = load_config(with_base_config([Path(f"configs/natural/{name}.yaml")]), overrides)
    cpu_parameters = sum(p.numel() for p in build_model(cfg.model, 3, 5).parameters())
    metrics = train_model(cfg, stage=f"natural_bench/{name}")
    keep = ("epochs", "train_minutes", "test_miou", "test_pixel_accuracy", "test_dice_mean")
    return {"cpu_parameters_millions": round(cpu_parameters / 1e6, 3), **{k: metrics[k] for k in keep if k in metrics}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--only", nargs="+", default=sorted(CPU_WIDTHS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = Path("benchmarks/results/natural_cpu.json")
    results = json.loads(out.read_text())["architectures"] if out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            model = paper_model(name)
            row = {
                "paper_parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                "paper_classes": PAPER_CLASSES.get(name, 21),
                "forward_seconds_256": round(forward_seconds(model), 3),
            }
            del model
            row.update(short_training(name, args.minutes, Path(tmp)))
            results[name] = row
            print(json.dumps({name: row}), flush=True)
            out.write_text(json.dumps({"minutes": args.minutes, "threads": 2, "architectures": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
