"""Preprocessing seconds per case: segpipe vs the MONAI tutorial chain, on the same phantoms, in one run.

MONAI chain: LoadImaged -> EnsureChannelFirstd -> Orientationd(RAS) -> Spacingd(bilinear/nearest)
-> ScaleIntensityRanged -> CropForegroundd. segpipe: ``preprocess_case`` (read by content, reorient,
crop, normalise, SimpleITK resampling of image + one-hot label, and *writing* the .npy outputs).
Geometry check: same target spacing and RAS orientation, and each organ's world-space centroid
agrees between the two outputs to within one output voxel.

Each case runs ``--repeats`` times through each chain, alternating, and the median time counts (on 2 shared cores a
single run of a 0.1 s case moves by tens of percent).

Usage: python benchmarks/bench_preprocess.py [--data data/phantom] [--cases 6] [--repeats 3]
Writes benchmarks/results/preprocess.json (numbers quoted in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.config import PipelineConfig
from pipeline.data.layout import load_dataset
from pipeline.planning.run import plan_dataset
from pipeline.preprocess.run import make_plan, preprocess_case


def monai_chain(spacing):
    from monai.transforms import (
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    keys = ["image", "label"]
    return Compose(
        [
            LoadImaged(keys=keys),
            EnsureChannelFirstd(keys=keys),
            Orientationd(keys=keys, axcodes="RAS"),
            Spacingd(keys=keys, pixdim=spacing, mode=("bilinear", "nearest")),
            ScaleIntensityRanged(keys="image", a_min=-160, a_max=240, b_min=0.0, b_max=1.0, clip=True),
            CropForegroundd(keys=keys, source_key="image", allow_smaller=True),
        ]
    )


def centroids(label: np.ndarray, affine: np.ndarray) -> dict[int, np.ndarray]:
    out = {}
    for value in (1, 2, 3):
        ijk = np.argwhere(label == value)
        out[value] = (ijk @ affine[:3, :3].T + affine[:3, 3]).mean(axis=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("data/phantom"))
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--matrix", type=int, default=0, help="generate N phantoms at this matrix (0.7 mm in-plane) instead")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each chain per case, alternating; the median counts")
    args = parser.parse_args()
    if args.matrix:
        from pipeline.config import SynthSettings
        from pipeline.data.phantom import generate_phantom_dataset

        args.data = Path(tempfile.mkdtemp()) / "ct_sized"
        spacing = 350.0 / args.matrix
        generate_phantom_dataset(
            SynthSettings(
                out_dir=args.data,
                n_labeled=args.cases,
                n_test=0,
                n_unlabeled=0,
                matrix=args.matrix,
                inplane_spacing_mm=(spacing, spacing),
                slice_spacing_mm=(1.5, 2.0),
            ),
            num_workers=2,
        )
    dataset = load_dataset(args.data)
    cases = dataset.split("train")[: args.cases]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PipelineConfig.model_validate(
            {
                "base": {"num_workers": 0},
                "data": {"root": str(args.data)},
                "plan": {"file": f"{tmp}/plan/plans.json"},
                "crossval": {"split_file": f"{tmp}/plan/splits.json"},
                "preprocess": {"out_dir": tmp},
            }
        )
        t0 = time.perf_counter()
        plans = plan_dataset(cfg)  # the fingerprint, and the grid the CPU profile's 3D network trains on
        fingerprint_s = time.perf_counter() - t0
        spacing = plans.configuration("3d").spacing
        transform = monai_chain(spacing)
        plan = make_plan(dataset, cfg.preprocess, plans, spacing, Path(tmp))
        rows = []
        for case in cases:
            monai_times, ours_times = [], []
            for _ in range(args.repeats):  # alternating, so both chains see the same machine state
                t0 = time.perf_counter()
                monai_out = transform({"image": str(case.images[0]), "label": str(case.label)})
                monai_times.append(time.perf_counter() - t0)
                shutil.rmtree(Path(tmp) / "cases" / case.case_id, ignore_errors=True)  # no skip of an unchanged case
                t0 = time.perf_counter()
                record = preprocess_case(case, plan)
                ours_times.append(time.perf_counter() - t0)
            monai_s, ours_s = float(np.median(monai_times)), float(np.median(ours_times))
            ours_label = np.load(Path(tmp) / "cases" / case.case_id / "label.npy")
            ours_affine = np.asarray(record["geometry"]["preprocessed_affine"])
            monai_label = monai_out["label"][0].numpy()
            monai_affine = monai_out["label"].affine.numpy()
            ours_c, monai_c = centroids(ours_label, ours_affine), centroids(monai_label, monai_affine)
            rows.append(
                {
                    "case": case.case_id,
                    "monai_s": round(monai_s, 3),
                    "segpipe_s": round(ours_s, 3),
                    "monai_shape": list(monai_label.shape),
                    "segpipe_shape": list(ours_label.shape),
                    "monai_spacing": np.linalg.norm(monai_affine[:3, :3], axis=0).round(4).tolist(),
                    "segpipe_spacing": np.linalg.norm(ours_affine[:3, :3], axis=0).round(4).tolist(),
                    "max_centroid_difference_mm": round(max(float(np.linalg.norm(ours_c[v] - monai_c[v])) for v in ours_c), 3),
                }
            )
            print(rows[-1])
    monai_mean = float(np.mean([r["monai_s"] for r in rows]))
    ours_mean = float(np.mean([r["segpipe_s"] for r in rows]))
    summary = {
        "machine": {
            "cpu_count": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "data": "default phantoms" if not args.matrix else f"{args.matrix}^2 phantoms, 350 mm FOV, 1.5-2 mm slices",
        "target_spacing": list(spacing),
        "fingerprint_seconds_total": round(fingerprint_s, 3),
        "fingerprint_cases": len(dataset.split("train")),
        "monai_seconds_per_case": round(monai_mean, 3),
        "segpipe_seconds_per_case": round(ours_mean, 3),
        "speedup": round(monai_mean / ours_mean, 2),
        "repeats_per_case": args.repeats,
        "cases": rows,
    }
    out = Path(__file__).parent / "results" / f"preprocess_{args.matrix or 'default'}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "cases"}, indent=2))


if __name__ == "__main__":
    main()
