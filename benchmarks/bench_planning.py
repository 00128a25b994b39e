"""Our planner beside nnU-Net v2's own planner, on the same datasets, in one run.

Datasets: the phantom CT at 256^2 (the default), the phantom CT at 512^2 (0.7 mm in-plane) and the
brain MR phantom (1 mm). nnU-Net v2 (PyPI ``nnunetv2``) is installed for this benchmark only, never
as a dependency, e.g. ``pip install --target /tmp/nnpkgs --no-deps nnunetv2 dynamic-network-architectures
acvl-utils batchgenerators batchgeneratorsv2`` plus ``scikit-image``; run with PYTHONPATH pointing there.

"Equal memory budget": nnU-Net plans its own PlainConvUNet for an 8 GB target. Our planner is given
the budget that *our* V-Net (nnU-Net's widths, 32 up to 320) needs for nnU-Net's chosen 3d_fullres patch
and batch, so both plan under the same memory in their own network's terms; then we compare target
spacing, normalisation scheme, patch, batch, pooling per axis and kernels. Axes are reported as
(x, y, z) of the scans (nnU-Net's transposed array order is mapped back).

Usage: PYTHONPATH=/tmp/nnpkgs:/tmp/nnpkgs2 python benchmarks/bench_planning.py [--cases 8]
Writes benchmarks/results/planning.json (numbers quoted in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.config import PipelineConfig, SynthSettings
from pipeline.data.layout import load_dataset
from pipeline.planning.memory import estimate_activation_mb
from pipeline.planning.planner import PlanningInput, make_plans
from pipeline.planning.profiles import get_profile

DATASETS = {
    "phantom_ct_256": {"matrix": 256},
    "phantom_ct_512": {"matrix": 512, "inplane_spacing_mm": (0.68, 0.7), "slice_spacing_mm": (1.5, 2.0)},
    "brain_mr_1mm": {"modality": "MR", "matrix": 128},
}


def generate(name: str, root: Path, cases: int) -> Path:
    from pipeline.data.mr_phantom import generate_mr_dataset
    from pipeline.data.phantom import generate_phantom_dataset

    settings = SynthSettings(out_dir=root / name, n_labeled=cases, n_test=0, n_unlabeled=0, **DATASETS[name])
    (generate_mr_dataset if settings.modality == "MR" else generate_phantom_dataset)(settings, num_workers=2)
    return settings.out_dir


def to_nnunet_raw(dataset_dir: Path, raw: Path, task_id: int) -> str:
    """Symlink an MSD-layout dataset into nnU-Net v2's raw layout (``DatasetXXX_Name``)."""
    dataset = load_dataset(dataset_dir)
    name = f"Dataset{task_id:03d}_{dataset_dir.name}"
    (raw / name / "imagesTr").mkdir(parents=True)
    (raw / name / "labelsTr").mkdir()
    for case in dataset.split("train"):
        (raw / name / "imagesTr" / f"{case.case_id}_0000.nii.gz").symlink_to(case.images[0].resolve())
        (raw / name / "labelsTr" / f"{case.case_id}.nii.gz").symlink_to(case.label.resolve())
    meta = {
        "channel_names": {str(i): m for i, m in enumerate(dataset.modalities)},
        "labels": {label.name: label.value for label in dataset.labels.labels},
        "numTraining": len(dataset.split("train")),
        "file_ending": ".nii.gz",
    }
    (raw / name / "dataset.json").write_text(json.dumps(meta))
    return name


def nnunet_plan(task_id: int, name: str, preprocessed: Path) -> dict:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    extract_fingerprints([task_id], check_dataset_integrity=False, clean=True, verbose=False, num_processes=2)
    plan_experiments([task_id])
    plans = json.loads((preprocessed / name / "nnUNetPlans.json").read_text())
    backward = plans["transpose_backward"]  # nnU-Net's axes -> SimpleITK array axes (z, y, x)
    out = {}
    for key, conf in plans["configurations"].items():
        if "patch_size" not in conf:
            continue
        xyz = _to_xyz(backward, len(conf["patch_size"]))
        arch = conf["architecture"]["arch_kwargs"]
        out[key] = {
            "spacing": [round(s, 4) for s in xyz(conf["spacing"])],
            "patch_size": xyz(conf["patch_size"]),
            "batch_size": conf["batch_size"],
            "poolings_per_axis": xyz(np.log2(np.prod(arch["strides"], axis=0)).astype(int).tolist()),
            "first_kernel": xyz(arch["kernel_sizes"][0]),
            "normalization": conf["normalization_schemes"],
        }
    return out


def _to_xyz(backward: list[int], dims: int):
    """Map values in nnU-Net's transposed axis order back to the scans' (x, y, z); 2D drops the first axis."""

    def xyz(values):
        values = [None, *values] if dims == 2 else list(values)
        zyx = [values[b] for b in backward]
        return [v for v in zyx[::-1] if v is not None]

    return xyz


def our_plan(dataset_dir: Path, reference: dict | None, work: Path) -> tuple[dict, float]:
    """Our plan under the budget our V-Net needs for nnU-Net's 3d_fullres patch and batch (nnU-Net's widths)."""
    from pipeline.planning.run import plan_dataset

    cfg = PipelineConfig.model_validate(
        {
            "base": {"num_workers": 2},
            "data": {"root": str(dataset_dir)},
            "plan": {"file": str(work / "plans.json"), "profile": "gpu24"},
            "crossval": {"split_file": str(work / "splits.json")},
        }
    )
    plans = plan_dataset(cfg)  # fingerprint; re-planned below with the equal budget
    fp = json.loads((work / "fingerprint.json").read_text())
    data = PlanningInput(
        str(dataset_dir), plans.modalities, plans.labels,
        np.array([c["spacing"] for c in fp["cases"]]), np.array([c["shape_after_crop"] for c in fp["cases"]]),
        fp["intensity"] if plans.modalities[0] == "CT" else None,
    )  # fmt: skip
    profile = get_profile("gpu24")
    budget = profile.budget_mb_3d
    if reference is not None:
        full = plans.configurations["3d_fullres"]
        patch = tuple(reference["3d_fullres"]["patch_size"])
        from pipeline.planning.topology import plan_topology

        topology = plan_topology(full.spacing, patch, profile.min_edge, profile.max_stages)
        widths = tuple(min(32 * 2**i, 320) for i in range(topology.num_stages))
        per_sample = estimate_activation_mb(3, len(plans.modalities), len(plans.labels), topology.patch_size, widths,
                                            topology.pools, topology.kernels)  # fmt: skip
        budget = per_sample * reference["3d_fullres"]["batch_size"]
        profile = replace(profile, budget_mb_3d=budget, budget_mb_2d=budget)
    planned = make_plans(data, profile)
    out = {}
    for key, conf in planned.configurations.items():
        out[key] = {
            "spacing": [round(s, 4) for s in (conf.spacing if conf.spatial_dims == 3 else conf.spacing[:2])],
            "patch_size": list(conf.patch_size),
            "batch_size": conf.batch_size,
            "poolings_per_axis": [int(np.log2(np.prod([p[a] for p in conf.pools]))) for a in range(conf.spatial_dims)],
            "first_kernel": list(conf.kernels[0]),
            "normalization": [n.scheme for n in planned.normalisation],
        }
    return out, budget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/planning.json"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    for folder in ("raw", "preprocessed", "results"):
        os.environ[f"nnUNet_{folder}"] = str(root / folder)
        (root / folder).mkdir()
    rows = {}
    for task_id, name in enumerate(DATASETS, start=1):
        data = generate(name, root / "data", args.cases)
        raw_name = to_nnunet_raw(data, root / "raw", task_id)
        reference = nnunet_plan(task_id, raw_name, root / "preprocessed")
        ours, budget = our_plan(data, reference, root / "ours" / name)
        rows[name] = {"nnunet": reference, "segpipe": ours, "segpipe_budget_mb": round(budget, 1)}
        print(json.dumps({name: rows[name]}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cases_per_dataset": args.cases, "datasets": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
