"""Everything a training run needs, assembled from config: device, data, network, optimizer, loss."""

from __future__ import annotations

import json
import os
import random
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from pipeline.config import PipelineConfig
from pipeline.crossval.splits import read_splits
from pipeline.devices import amp_dtype_for, pick_device
from pipeline.io_utils import text_digest
from pipeline.models import build_model
from pipeline.planning.planner import network_input_channels
from pipeline.training.augment import build_augmentation
from pipeline.training.checkpoint import flatten
from pipeline.training.data import (
    CaseArrays,
    Manifest,
    PatchDataset,
    fold_train_val,
    load_case,
    read_manifest,
    split_train_val,
    use_mmap,
)
from pipeline.training.distributed import DistContext, init_distributed
from pipeline.training.losses import SegmentationLoss, unet_border_weight_map
from pipeline.training.run import TrainingRun
from pipeline.training.schedule import build_optimizer
from pipeline.training.tasks import task_for
from pipeline.training.transfer import load_encoder

# Settings that may change when resuming; everything else in these sections must match (T4).
RESUMABLE_TRAIN_KEYS = {
    "out_dir",
    "checkpoint_dir",
    "reports_dir",
    "max_time_minutes",
    "val_every",
    "weights",
    "val_overlap",
    "device",
    "cache",
    "loader_workers",
    "resume",
    "overlay_cases",
    "evaluate_test",
    "channels_last",
}


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; make CPU (and cuDNN) kernels deterministic when asked."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def data_fingerprint(manifest: Manifest) -> str:
    """Hash of the preprocessing settings and every case's source-file digests."""
    digests = {}
    for entry in manifest.cases:
        record = json.loads((manifest.root / entry["record"]).read_text())
        digests[entry["case_id"]] = record.get("source_digests", {})
    return text_digest(json.dumps({"config": manifest.config_digest, "sources": digests}, sort_keys=True))


def resume_fingerprint(cfg: PipelineConfig, manifest: Manifest, data_hash: str, world_size: int) -> dict[str, str]:
    """The settings a checkpoint is bound to (compared key by key on resume)."""
    train = cfg.train.model_dump(mode="json", exclude=RESUMABLE_TRAIN_KEYS)
    payload = {
        "model": cfg.model.model_dump(mode="json"),
        "loss": cfg.loss.model_dump(mode="json"),
        "augment": cfg.augment.model_dump(mode="json"),
        "train": train,
        "base": {"seed": cfg.base.seed},
        "data": {"labels": manifest.labels, "modalities": manifest.modalities, "fingerprint": data_hash},
        "world_size": world_size,
    }
    return flatten("", payload)


def build_run(cfg: PipelineConfig) -> TrainingRun:
    """Assemble device, data, model, optimizer and loss for ``cfg`` (joins DDP under torchrun).

    Raises:
        InvalidInputError: missing manifest or too few labelled cases.
    """
    t = cfg.train
    env_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(t.device, env_rank)
    ctx = init_distributed(device)
    seed_everything(cfg.base.seed, t.deterministic)
    manifest = read_manifest(cfg.preprocess.out_dir)
    task = task_for(cfg.model.name)
    if t.fold is not None and task.needs_labels:
        splits = read_splits(cfg.crossval.split_file)
        train_entries, val_entries = fold_train_val(
            training_entries(cfg, manifest, task), splits, t.fold, cfg.crossval.split_file
        )
    else:
        train_entries, val_entries = split_train_val(
            training_entries(cfg, manifest, task), t.val_cases, cfg.base.seed, task.needs_labels
        )
    if t.labelled_cases is not None and task.needs_labels:
        keep = np.random.default_rng(cfg.base.seed + 1).permutation(len(train_entries))[: t.labelled_cases]
        train_entries = [train_entries[i] for i in sorted(keep)]
    mmap = use_mmap(t.cache, manifest, train_entries)
    cases = [load_case(manifest, e, mmap=mmap) for e in train_entries]
    in_channels = network_input_channels(len(manifest.modalities), cfg.model.context_slices)
    model = build_model(cfg.model, in_channels, manifest.num_classes).to(device)
    if t.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last if cfg.model.spatial_dims == 2 else torch.channels_last_3d)
    transfer = load_encoder(model, t.init_from, t.init_strict) if t.init_from else None
    loss = SegmentationLoss(cfg.loss) if task.needs_labels else None
    dataset, loader = make_loader(cfg, cases, ctx, device, loss is not None and loss.needs_weight_map)
    optimizer = build_optimizer(t, model)
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp_dtype = amp_dtype_for(t.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    data_hash = data_fingerprint(manifest)
    return TrainingRun(
        cfg,
        ctx,
        device,
        manifest,
        cases,
        val_entries,
        model,
        optimizer,
        loss,
        loader,
        dataset,
        in_channels,
        amp_dtype,
        scaler,
        resume_fingerprint(cfg, manifest, data_hash, ctx.world_size),
        data_hash,
        task,
        transfer,
    )


def training_entries(cfg: PipelineConfig, manifest: Manifest, task) -> list[dict]:
    """Labelled training cases for segmentation; unlabeled scans (plus training images) for pretraining."""
    if task.needs_labels:
        return manifest.split("train")
    extra = manifest.split("train") if cfg.train.pretrain_images == "unlabeled+train" else []
    return manifest.split("unlabeled") + [{k: v for k, v in e.items() if k != "label"} for e in extra]


def make_loader(
    cfg: PipelineConfig, cases: list[CaseArrays], ctx: DistContext, device: torch.device, weight_map: bool
) -> tuple[PatchDataset, DataLoader]:
    """The patch dataset (all ranks' samples of an epoch) and this rank's loader over its share."""
    t = cfg.train
    weight_fn = partial(unet_border_weight_map, w0=cfg.loss.border_w0, sigma=cfg.loss.border_sigma_px) if weight_map else None
    augment = build_augmentation(cfg.augment, cfg.model.spatial_dims, with_label=cfg.model.name != "autoencoder")
    samples = t.iterations_per_epoch * t.batch_size * ctx.world_size
    dataset = PatchDataset(
        cases,
        t.patch_size,
        cfg.model.context_slices,
        t.foreground_fraction,
        samples,
        cfg.base.seed,
        augment,
        weight_fn,
        slice_axis=cfg.model.slice_axis,
    )
    sampler = DistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=False) if ctx.enabled else None
    loader = DataLoader(
        dataset,
        t.batch_size,
        sampler=sampler,
        num_workers=t.loader_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=t.loader_workers > 0,
    )
    return dataset, loader


def checkpoint_paths(cfg: PipelineConfig) -> tuple[Path, Path]:
    """``(last, best)`` checkpoint files in ``train.checkpoint_dir``."""
    folder = Path(cfg.train.checkpoint_dir)
    return folder / "last.pt", folder / "best.pt"
