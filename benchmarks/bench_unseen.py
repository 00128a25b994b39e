"""Planned defaults vs the MONAI spleen-tutorial recipe on a dataset the defaults were not tuned on, at equal CPU budget.

The peer is the recipe a new user copies from MONAI's ``spleen_segmentation_3d`` tutorial, unchanged:
``ScaleIntensityRanged(-57, 164 -> 0, 1)``, ``CropForegroundd``, ``Orientationd(RAS)``, ``Spacingd(1.5, 1.5, 2)``,
``RandCropByPosNegLabeld(96^3, pos=1, neg=1, 4 samples)``, MONAI ``UNet`` (16...256, 2 residual units, batch norm), Dice loss
with softmax, Adam 1e-4, batch 2; inference by ``sliding_window_inference`` (160^3) and ``Invertd`` back to each scan's grid. It
trains for the wall-clock minutes our pipeline spent training (pretraining + training stages, read from their metrics).
Both are scored with the same Dice (``pipeline.evaluation.metrics.dice_per_class``) on each test scan's original grid,
against the same label files. Ours comes from ``reports/evaluate/metrics.json`` of a finished ``dvc repro`` on that dataset.

Usage: python benchmarks/bench_unseen.py --project /tmp/mrrun [--minutes M] [--peer-from benchmarks/results/unseen_brain.json]
Writes results/unseen_<dataset folder>.json beside this script. ``--peer-from`` keeps the recipe's figures of an earlier
run on the same data (the recipe does not change with segpipe's code) instead of training it again for the same minutes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from run_unseen import train_minutes

from pipeline.data.layout import load_dataset
from pipeline.evaluation.metrics import dice_per_class


def spleen_recipe(num_classes: int):
    from monai import transforms as mt
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    keys = ["image", "label"]
    common = [
        mt.LoadImaged(keys),
        mt.EnsureChannelFirstd(keys),
        mt.ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True),
        mt.CropForegroundd(keys, source_key="image", allow_smaller=True),
        mt.Orientationd(keys, axcodes="RAS"),
        mt.Spacingd(keys, pixdim=(1.5, 1.5, 2.0), mode=("bilinear", "nearest")),
    ]
    train = mt.Compose([*common, mt.RandCropByPosNegLabeld(keys, "label", spatial_size=(96, 96, 96), pos=1, neg=1, num_samples=4,
                                                           image_key="image", image_threshold=0, allow_smaller=True),
                        mt.SpatialPadd(keys, spatial_size=(96, 96, 96))])  # fmt: skip
    val = mt.Compose(common)
    model = UNet(3, 1, num_classes, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2, norm=Norm.BATCH)
    return train, val, model


def train_recipe(files, num_classes: int, minutes: float, seed: int = 0):
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceLoss
    from monai.utils import set_determinism

    set_determinism(seed)
    train_tf, val_tf, model = spleen_recipe(num_classes)
    loader = DataLoader(CacheDataset(files, train_tf, num_workers=2), batch_size=2, shuffle=True, num_workers=0)
    loss_fn, optimizer = DiceLoss(to_onehot_y=True, softmax=True), torch.optim.Adam(model.parameters(), 1e-4)
    started, steps, epochs = time.perf_counter(), 0, 0
    while time.perf_counter() - started < minutes * 60:
        model.train()
        for batch in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(batch["image"]), batch["label"])
            loss.backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - started >= minutes * 60:
                break
        epochs += 1
    return model, val_tf, {"steps": steps, "epochs": epochs, "minutes": round((time.perf_counter() - started) / 60, 2)}


@torch.no_grad()
def score_recipe(model, val_tf, cases, num_classes: int) -> list[list[float]]:
    from monai import transforms as mt
    from monai.inferers import sliding_window_inference

    invert = mt.Invertd("pred", transform=val_tf, orig_keys="image", nearest_interp=False, to_tensor=True)
    model.eval()
    scores = []
    for case in cases:
        data = val_tf({"image": str(case.images[0]), "label": str(case.label)})
        logits = sliding_window_inference(data["image"][None], (160, 160, 160), 4, model)
        data["pred"] = torch.softmax(logits[0], 0)
        restored = invert(data)["pred"].argmax(0)
        truth = torch.as_tensor(np.asanyarray(nib.load(case.label).dataobj)).long()
        scores.append(dice_per_class(restored.long(), truth, num_classes).tolist())
    return scores


def run_recipe(dataset, minutes: float) -> dict:
    """Train the recipe for ``minutes`` and score it on the labelled test scans."""
    files = [{"image": str(c.images[0]), "label": str(c.label)} for c in dataset.split("train")]
    n = dataset.labels.num_classes
    model, val_tf, run = train_recipe(files, n, minutes)
    tests = [c for c in dataset.split("test") if c.label is not None]
    recipe = np.mean(score_recipe(model, val_tf, tests, n), axis=0)
    names = [label.name for label in dataset.labels.foreground()]
    return {**run, "dice_mean": float(recipe.mean()), **{f"dice_{k}": float(v) for k, v in zip(names, recipe)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a folder where `dvc repro` ran on the dataset")
    parser.add_argument("--minutes", type=float, default=None, help="default: the pipeline's pretraining + training minutes")
    parser.add_argument("--peer-from", type=Path, default=None, help="reuse the recipe's result from this earlier output")
    args = parser.parse_args()
    import yaml

    params = yaml.safe_load((args.project / "configs" / "params.yaml").read_text())
    dataset = load_dataset(args.project / params["data"]["root"])
    stages = [*args.project.glob("reports/pretrain_*/metrics.json"), *args.project.glob("reports/train_*/fold_*/metrics.json")]
    minutes = args.minutes or sum(train_minutes(p) for p in stages)
    if args.peer_from:
        earlier = json.loads(args.peer_from.read_text())
        peer, minutes = earlier["monai_spleen_recipe"], earlier["budget_minutes"]
    else:
        peer = run_recipe(dataset, minutes)
    ours = json.loads((args.project / "reports" / "evaluate" / "metrics.json").read_text())
    result = {
        "dataset": dataset.root.name,
        "budget_minutes": round(minutes, 2),
        "monai_spleen_recipe": peer,
        "segpipe_planned": {k: v for k, v in ours.items() if k.startswith("dice")},
        "segpipe_minutes": round(sum(train_minutes(p) for p in stages), 2),
        "ratio": ours["dice_mean"] / max(float(peer["dice_mean"]), 1e-9),
    }
    out = Path(__file__).resolve().parent / "results" / f"unseen_{dataset.root.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
