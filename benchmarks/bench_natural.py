"""The natural-image architectures side by side: parameters at paper settings, CPU forward time, mIoU after an equal budget.

For each architecture of ``configs/natural/``:
* parameters at the paper's settings (the config's model section) for the paper's number of classes;
* forward time of one 256 x 256 RGB image at those settings (batch 1, eval mode, median of 3 after a warm-up), and of
  one 512 x 512 image for Mask R-CNN (the issue's figure);
* test mIoU and pixel accuracy on the generated scenes (the 40 ``val`` scenes) after a fixed number of epochs through
  ``segpipe train``'s engine (steps, not minutes, decide the work, so a rerun repeats it), at reduced CPU widths
  (``CPU_WIDTHS``; paper widths do not train in minutes on 2 cores), with everything else from the architecture's
  config. The semantic models' epochs are those a 2-minute budget gave them on this machine (the committed JSON);
  Mask R-CNN's (``MASK_RCNN_TRAIN``) fill about 10 minutes, and it also reports COCO box and mask AP, AP50, AP75.

Usage: python benchmarks/bench_natural.py [--epochs N] [--only fcn8s segnet mask_rcnn ...]
Needs the scenes: segpipe scenes && segpipe prepare-natural. Writes benchmarks/results/natural_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline.config import load_config, with_base_config
from pipeline.models import build_model
from pipeline.training.engine import train_model

PAPER_CLASSES = {
    "mask_rcnn": 91,
    "segnet": 11,
    "setr_naive": 150,
    "setr_pup": 150,
    "setr_mla": 150,
    "swin_upernet": 150,
    "pspnet": 150,
}
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
    "mask_rcnn": {  # reduced widths and RoI counts (the paper's 512 RoIs per image cost 4x in the heads)
        **RESNET,
        "fpn_channels": 64,
        "box_head_width": 256,
        "mask_head_channels": 64,
        "roi_batch_per_image": 128,
        "rpn_post_nms": [500, 1000],
    },
    "swin_upernet": {
        "embed_dim": 24,
        "depths": [2, 2, 2, 2],
        "num_heads": [1, 2, 4, 8],
        "window_size": 8,
        "decoder_channels": 64,
    },
}


MASK_RCNN_TRAIN = {"max_epochs": 28, "iterations_per_epoch": 50, "val_every": 7, "batch_size": 2}
AP_KEYS = [f"test_{kind}_{m}" for kind in ("box", "mask") for m in ("ap", "ap50", "ap75")]


def paper_model(name: str):
    cfg = load_config(with_base_config([Path(f"configs/natural/{name}.yaml")]))
    return build_model(cfg.model, 3, PAPER_CLASSES.get(name, 21))


def forward_seconds(model: torch.nn.Module, side: int = 256) -> float:
    model.eval()
    image = torch.randn(1, 3, side, side)
    times = []
    with torch.no_grad():
        model(image)
        for _ in range(3):
            start = time.perf_counter()
            model(image)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def short_training(name: str, epochs: int, work: Path) -> dict:
    overrides = [f"model.{key}={json.dumps(value)}" for key, value in CPU_WIDTHS[name].items()]
    schedule = dict(MASK_RCNN_TRAIN) if name == "mask_rcnn" else {"batch_size": 4, "val_every": 1000}
    schedule["max_epochs"] = epochs or schedule.get("max_epochs")
    overrides += [f"train.{key}={value}" for key, value in schedule.items()]
    overrides += [
        "train.max_time_minutes=60",  # a guard only
        "train.overlay_cases=2",
        f"train.out_dir={work / name / 'model'}",
        f"train.checkpoint_dir={work / name / 'checkpoints'}",
        f"train.reports_dir={work / name / 'reports'}",
        "tracking.experiment=natural-bench",
        "tracking.log_model=false",
    ]
    cfg = load_config(with_base_config([Path(f"configs/natural/{name}.yaml")]), overrides)
    cpu_parameters = sum(p.numel() for p in build_model(cfg.model, 3, 5).parameters())
    metrics = train_model(cfg, stage=f"natural_bench/{name}")
    keep = ("epochs", "train_minutes", "test_miou", "test_pixel_accuracy", "test_dice_mean", *AP_KEYS)
    if name == "mask_rcnn":  # keep the overlays where the results are
        for png in (work / name / "reports" / "details").glob("overlay_*.png"):
            shutil.copy(png, Path("benchmarks/results") / f"mask_rcnn_{png.name}")
    return {"cpu_parameters_millions": round(cpu_parameters / 1e6, 3), **{k: metrics[k] for k in keep if k in metrics}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=0, help="0: each architecture's committed epochs (see above)")
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
            if name == "mask_rcnn":
                row["forward_seconds_512"] = round(forward_seconds(model, 512), 3)
            del model
            epochs = args.epochs or results.get(name, {}).get("epochs", 0)
            row.update(short_training(name, epochs, Path(tmp)))
            results[name] = row
            print(json.dumps({name: row}), flush=True)
            out.write_text(json.dumps({"threads": 2, "architectures": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
