"""Training throughput: the segpipe engine vs a plain MONAI-tutorial loop, same network, same crop, one run.

segpipe: ``build_run`` + ``train_epoch`` (preprocessed arrays cached in memory, foreground-oversampled
patches, the configured augmentation, in-process sampling).
Plain loop (the MONAI spleen tutorial pattern): uncached ``monai.data.Dataset`` over the *raw* NIfTI
files with LoadImaged -> EnsureChannelFirstd -> Orientationd -> Spacingd -> ScaleIntensityRanged ->
CropForegroundd -> SpatialPadd -> RandCropByPosNegLabeld(num_samples=batch) and a ``DataLoader`` with 2 workers,
then the same forward/backward/step. Both use the model, loss, optimizer and patch size of the
given config with 2D context 0 (the tutorial has no 2.5D), on the machine's default torch threads.

Usage: python benchmarks/bench_training.py [--models unet2d vnet3d] [--steps 12]
Writes benchmarks/results/training_<device>.json (quoted in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from pipeline.config import load_config, with_base_config
from pipeline.data.layout import load_dataset
from pipeline.planning.resolve import apply_plan


def _planned_spacing(cfg) -> tuple[float, float, float]:
    """The grid the plan trains this configuration on (what segpipe's preprocessed arrays are sampled on)."""
    from pipeline.planning.plans import read_plans

    return read_plans(cfg.plan.file).configuration(cfg.plan.configuration).spacing


def plain_monai_loader(cfg, batch_size: int):
    from monai import transforms as mt
    from monai.data import DataLoader, Dataset

    dataset = load_dataset(cfg.data.root)
    files = [{"image": str(c.images[0]), "label": str(c.label)} for c in dataset.cases if c.split == "train" and c.label]
    dims = cfg.model.spatial_dims
    crop = tuple(cfg.train.patch_size) + ((1,) if dims == 2 else ())
    keys = ["image", "label"]
    chain = mt.Compose(
        [
            mt.LoadImaged(keys),
            mt.EnsureChannelFirstd(keys),
            mt.Orientationd(keys, axcodes="RAS"),
            mt.Spacingd(keys, pixdim=_planned_spacing(cfg), mode=("bilinear", "nearest")),
            mt.ScaleIntensityRanged("image", a_min=-160, a_max=240, b_min=0.0, b_max=1.0, clip=True),
            mt.CropForegroundd(keys, source_key="image", allow_smaller=True),
            mt.SpatialPadd(keys, spatial_size=crop),
            mt.RandCropByPosNegLabeld(keys, "label", spatial_size=crop, pos=2, neg=1, num_samples=batch_size),
        ]
    )
    return DataLoader(Dataset(files, chain), batch_size=1, shuffle=True, num_workers=2, persistent_workers=True)


def time_plain_loop(cfg, steps: int, device: torch.device, amp_dtype) -> dict:
    from pipeline.models import build_model
    from pipeline.training.losses import SegmentationLoss

    model = build_model(cfg.model, 1, 4).to(device)
    loss_fn, optimizer = SegmentationLoss(cfg.loss), torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    loader, seen, started = plain_monai_loader(cfg, cfg.train.batch_size), 0, None
    iterator = iter(loader)
    for step in range(steps + 2):  # 2 warm-up steps (worker start-up, allocator)
        if step == 2:
            started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            batch = next(iterator)
        image, label = batch["image"].as_tensor(), batch["label"].as_tensor().long()
        if cfg.model.spatial_dims == 2:
            image, label = image[..., 0], label[..., 0]
        image, label = image.to(device), label.to(device)
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(image)
        loss_fn(logits.float(), label).backward()
        optimizer.step()
        seen += image.shape[0] if step >= 2 else 0
    _sync(device)
    return _rates(seen, time.perf_counter() - started, cfg.train.patch_size)


def time_engine(cfg, steps: int) -> dict:
    from pipeline.training.engine import train_epoch
    from pipeline.training.setup import build_run

    cfg.train.iterations_per_epoch = steps
    run = build_run(cfg)
    train_epoch(run, 0)  # warm-up epoch
    result = train_epoch(run, 1)
    return {"samples_per_s": result["samples_per_s"], "voxels_per_s": result["voxels_per_s"], "seconds": result["train_time_s"]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rates(samples: int, seconds: float, patch) -> dict:
    voxels = samples * int(torch.tensor(patch).prod())
    return {"samples_per_s": samples / seconds, "voxels_per_s": voxels / seconds, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["unet2d", "vnet3d"])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--amp", nargs="+", default=["off"], help="AMP settings to measure (GPU: off bf16)")
    parser.add_argument("--extra-config", type=Path, action="append", default=[])
    args = parser.parse_args()
    rows = []
    for name in args.models:
        for amp in args.amp:
            cfg, _ = apply_plan(
                load_config(
                    with_base_config([Path(f"configs/{name}.yaml"), *args.extra_config]),
                    ["train.init_from=null", *(["model.context_slices=0"] if name == "unet2d" else [])],
                )
            )
            cfg.train.amp, cfg.tracking.enabled = amp, False
            engine = time_engine(cfg, args.steps)
            from pipeline.devices import amp_dtype_for, pick_device

            device = pick_device(cfg.train.device)
            plain = time_plain_loop(cfg, args.steps, device, amp_dtype_for(amp, device))
            rows.append(
                {
                    "model": name,
                    "amp": amp,
                    "device": str(device),
                    "patch_size": list(cfg.train.patch_size),
                    "batch_size": cfg.train.batch_size,
                    "engine": engine,
                    "plain_monai": plain,
                    "speedup": engine["samples_per_s"] / plain["samples_per_s"],
                }
            )
            print(json.dumps(rows[-1]))
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads"
    out = Path("benchmarks/results") / f"training_{'gpu' if torch.cuda.is_available() else 'cpu'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"machine": platform.platform(), "device": device_name, "torch": torch.__version__, "rows": rows}, indent=2)
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
