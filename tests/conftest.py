"""Shared fixtures: tiny phantom datasets and builders of (deliberately broken) MSD datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.config import SynthSettings
from pipeline.data.phantom import generate_phantom_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_synth_settings(out_dir: Path, **changes) -> SynthSettings:
    """The real phantom generator shrunk: 64x64 matrix at ~5.4 mm keeps the ~350 mm field of view."""
    values = dict(
        out_dir=out_dir,
        n_labeled=4,
        n_test=1,
        n_unlabeled=2,
        matrix=64,
        inplane_spacing_mm=(5.2, 5.6),
        slice_spacing_mm=(8.0, 10.0),
        z_extent_mm=(200.0, 240.0),
    )
    values.update(changes)
    return SynthSettings(**values)


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory) -> Path:
    """A small phantom dataset (MSD layout), generated once per session. Treat as read-only."""
    root = tmp_path_factory.mktemp("phantom") / "AbdomenPhantom"
    generate_phantom_dataset(tiny_synth_settings(root))
    return root


def make_volume(shape=(12, 10, 8), value=0.0, dtype=np.int16) -> np.ndarray:
    """A simple CT-like volume: air with a soft-tissue block in the middle."""
    data = np.full(shape, -1000, dtype=np.float64)
    data[2:-2, 2:-2, 2:-2] = 40 if value == 0.0 else value
    return data.astype(dtype)


def make_label(shape=(12, 10, 8), dtype=np.uint8) -> np.ndarray:
    """A label with classes 1 and 2 inside the tissue block."""
    label = np.zeros(shape, dtype=dtype)
    label[3:6, 3:6, 3:5] = 1
    label[6:9, 3:6, 3:5] = 2
    return label


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save with nibabel (the suffix picks compression), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0]) if affine is None else affine), path)
    return path


def write_msd(root: Path, cases: dict[str, tuple[np.ndarray | None, np.ndarray | None]], affine=None) -> Path:
    """Write an MSD dataset whose training cases are ``{case_id: (image, label)}``; ``None`` skips a file."""
    training = []
    for case_id, (image, label) in cases.items():
        if image is not None:
            save(root / "imagesTr" / f"{case_id}.nii.gz", image, affine)
        if label is not None:
            save(root / "labelsTr" / f"{case_id}.nii.gz", label, affine)
        training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
    meta = {
        "name": "Tiny",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "spleen"},
        "numTraining": len(training),
        "training": training,
        "test": [],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def data_config(root: Path, out: Path, profile: str = "cpu", **preprocess):
    """Config of the plan and preprocess stages for ``root``, writing under ``out`` (the plan beside it, in ``<out>_plan``:
    preprocess owns ``out`` and removes what it did not write)."""
    from pipeline.config import PipelineConfig

    return PipelineConfig.model_validate(
        {
            "base": {"num_workers": 0},
            "data": {"root": str(root)},
            "plan": {"file": str(out.with_name(out.name + "_plan") / "plans.json"), "profile": profile},
            "crossval": {"split_file": str(out.with_name(out.name + "_plan") / "splits.json")},
            "preprocess": {"out_dir": str(out), **preprocess},
        }
    )


def plan_and_preprocess(cfg) -> Path:
    """Run the plan and preprocess stages; return the full-resolution folder (what training reads)."""
    from pipeline.planning.run import plan_dataset
    from pipeline.preprocess.run import preprocess_dataset

    plan_dataset(cfg)
    return preprocess_dataset(cfg).parent


@pytest.fixture(scope="session")
def tiny_preprocessed(tiny_phantom, tmp_path_factory) -> Path:
    """``tiny_phantom`` planned and preprocessed at 8 x 8 x 10 mm (about 40 x 30 x 22 voxels per case): the
    full-resolution folder. Read-only."""
    out = tmp_path_factory.mktemp("preprocessed")
    return plan_and_preprocess(data_config(tiny_phantom, out, spacing_mm=[8.0, 8.0, 10.0]))


TINY_MODELS = {
    "autoencoder": {
        "model": {
            "name": "autoencoder",
            "encoder": "unet2d",
            "widths": [4, 8],
            "norm": "batch",
            "context_slices": 1,
            "latent_channels": 2,
        },
        "train": {"patch_size": [32, 32], "batch_size": 4, "evaluate_test": False, "overlay_cases": 0},
    },
    "unet2d": {
        "model": {"name": "unet2d", "widths": [4, 8], "context_slices": 1},
        "train": {"patch_size": [32, 32], "batch_size": 4},
    },
    "vnet3d": {
        "model": {"name": "vnet3d", "widths": [4, 8], "convs": [1, 1], "kernel_size": 3},
        "train": {"patch_size": [16, 16, 16], "batch_size": 2},
    },
}


def tiny_train_config(preprocessed: Path, work: Path, network: str = "unet2d", **sections):
    """The real config shrunk to seconds: tiny network, 2 epochs of 2 steps, MLflow in ``work``."""
    from pipeline.config import PipelineConfig

    raw = {
        "base": {"seed": 3, "num_workers": 0},
        "preprocess": {"out_dir": str(preprocessed)},
        "model": dict(TINY_MODELS[network]["model"]),
        "train": {
            **TINY_MODELS[network]["train"],
            "out_dir": str(work / "model"),
            "checkpoint_dir": str(work / "checkpoints"),
            "reports_dir": str(work / "reports"),
            "iterations_per_epoch": 2,
            "max_epochs": 2,
            "val_every": 1,
            "val_cases": 1,
            "overlay_cases": 1,
            "device": "cpu",
        },
        "tracking": {
            "tracking_uri": f"sqlite:///{work / 'mlflow.db'}",
            "artifact_root": str(work / "mlartifacts"),
            "log_model": False,
        },
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return PipelineConfig.model_validate(raw)


REQUIRE_OPTIONAL = "SEGPIPE_REQUIRE_OPTIONAL"  # `make test` (and so CI) sets it: a missing optional tool fails loudly


def require_optional(name: str, available: bool, extra: str) -> None:
    """Skip with the reason when an optional tool is absent locally; fail where the dev extra must provide it (CI)."""
    if available:
        return
    message = f"{name} is not installed (pip install -e '.[{extra}]')"
    if os.environ.get(REQUIRE_OPTIONAL) == "1":
        pytest.fail(f"{message}; {REQUIRE_OPTIONAL}=1 requires every optional tool", pytrace=False)
    pytest.skip(message)


def crf_available() -> bool:
    """Whether pydensecrf2 (the ``crf`` extra) imports."""
    import importlib.util

    return importlib.util.find_spec("pydensecrf") is not None


def write_multimodal_msd(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]], modalities=("T2", "ADC"), affine=None):
    """Write a multi-modal MSD dataset (as ``Task05_Prostate``): each training image one 4D file ``(x, y, z, C)``."""
    write_msd(root, {case_id: (np.zeros(label.shape, np.int16), label) for case_id, (_, label) in cases.items()}, affine)
    for case_id, (image, _) in cases.items():
        save(root / "imagesTr" / f"{case_id}.nii.gz", image, affine)
    meta = json.loads((root / "dataset.json").read_text())
    meta["modality"] = {str(i): name for i, name in enumerate(modalities)}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root
