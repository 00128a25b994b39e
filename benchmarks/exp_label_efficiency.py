"""Label efficiency: U-Net and V-Net trained on 2 labelled phantoms, from scratch vs from the pretrained encoder.

Equal budgets for both arms (same epochs, steps, batch, patch, learning rate, augmentation); 3 seeds
each (``base.seed`` changes the network initialisation, the choice of the 2 training cases and every
sampled patch; the 2 validation cases are the same held-out cases for a given seed in both arms).
The pretrained arm loads ``models/pretrain_<model>/encoder.pt`` (run ``dvc repro`` first) and trains
the whole network (no freezing). Every run is an MLflow run in experiment ``label-efficiency``.
Test Dice is on the 4 labelled test phantoms, preprocessed grid.

Usage: python benchmarks/exp_label_efficiency.py [--seeds 0 1 2] [--epochs 5] [--steps 20]
Writes benchmarks/results/label_efficiency.json (summarised in benchmarks/RESULTS.md). Each finished
run is appended to ``label_efficiency.partial.jsonl`` first, and runs found there (same settings) are
not repeated, so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from pipeline.config import load_config, with_base_config
from pipeline.training.engine import train_model


def run_arm(model: str, seed: int, pretrained: bool, epochs: int, steps: int, work: Path) -> dict:
    name = f"{model}-{'pretrained' if pretrained else 'scratch'}-seed{seed}"
    overrides = [
        f"base.seed={seed}",
        "train.labelled_cases=2",
        f"train.max_epochs={epochs}",
        f"train.iterations_per_epoch={steps}",
        "train.max_time_minutes=30",
        f"train.val_every={epochs}",
        f"train.init_from={'models/pretrain_' + model + '/encoder.pt' if pretrained else 'null'}",
        f"train.out_dir={work / name / 'model'}",
        f"train.checkpoint_dir={work / name / 'checkpoints'}",
        f"train.reports_dir={work / name / 'reports'}",
        "train.overlay_cases=0",
        "tracking.experiment=label-efficiency",
        "tracking.log_model=false",
    ]
    cfg = load_config(with_base_config([Path(f"configs/{model}.yaml")]), overrides)
    metrics = train_model(cfg, stage=f"label_efficiency/{name}")
    row = {"model": model, "seed": seed, "pretrained": pretrained, **{k: v for k, v in metrics.items() if "dice" in k}}
    print(json.dumps(row), flush=True)
    return row


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for model in sorted({r["model"] for r in rows}):
        for pretrained in (False, True):
            scores = [r["test_dice_mean"] for r in rows if r["model"] == model and r["pretrained"] == pretrained]
            table.append(
                {
                    "model": model,
                    "pretrained": pretrained,
                    "n": len(scores),
                    "test_dice_mean": statistics.mean(scores),
                    "test_dice_sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                    "scores": scores,
                }
            )
    return table


def _finished_runs(partial: Path, args) -> dict[tuple, dict]:
    """Runs already recorded in ``partial`` with the same epochs and steps."""
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            row = json.loads(line)
            if (row.pop("epochs"), row.pop("steps")) == (args.epochs, args.steps):
                done[(row["model"], row["seed"], row["pretrained"])] = row
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["unet2d", "vnet3d"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    partial = Path("benchmarks/results/label_efficiency.partial.jsonl")
    done = _finished_runs(partial, args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for seed in args.seeds:
                for pretrained in (False, True):
                    key = (model, seed, pretrained)
                    if key not in done:
                        done[key] = run_arm(model, seed, pretrained, args.epochs, args.steps, Path(tmp))
                        with partial.open("a") as fh:
                            fh.write(json.dumps({**done[key], "epochs": args.epochs, "steps": args.steps}) + "\n")
                    rows.append(done[key])
    out = Path("benchmarks/results/label_efficiency.json")
    out.write_text(json.dumps({"settings": vars(args), "runs": rows, "summary": summarise(rows)}, indent=2) + "\n")
    for line in summarise(rows):
        print(json.dumps({k: v for k, v in line.items() if k != "scores"}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
