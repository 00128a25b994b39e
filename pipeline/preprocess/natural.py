"""The natural-image track's preparation: a VOC-layout folder into the manifest the training engine reads.

Images become float32 arrays (3, W, H, 1): RGB scaled to [0, 1] and standardised per channel with
``natural.mean`` / ``natural.std``, indexed (x = column, y = row, z = one slice) like the medical
arrays, so the engine's 2D path trains on them unchanged. Labels become uint8 (W, H, 1) with
VOC's void value mapped to background; where the folder has ``SegmentationObject/`` PNGs, the instance
ids are written the same way (``instances.npy``, void mapped to 0) for instance models (Mask R-CNN).
VOC ``train`` is the training split (the engine holds out ``train.val_cases`` of it for validation);
VOC ``val`` becomes the ``test`` split scored after training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.data.voc import load_voc_instances, load_voc_pair, read_voc
from pipeline.errors import DatasetError, InvalidInputError, Problem
from pipeline.io_utils import file_digest, save_npy_atomic, text_digest, write_json_atomic

MODALITIES = ["red", "green", "blue"]


def prepare_natural(cfg: PipelineConfig) -> Path:
    """Convert ``cfg.natural.root`` into ``cfg.natural.out_dir`` (arrays, records, ``dataset.json``).

    Returns:
        The manifest's path.

    Raises:
        DatasetError: missing files or unusable images, all listed; no manifest is written then.
    """
    settings = cfg.natural
    dataset = read_voc(settings.root)
    out_dir = Path(settings.out_dir)
    digest = text_digest(json.dumps(settings.model_dump(mode="json", exclude={"out_dir"}), sort_keys=True))
    cases, problems = [], []
    for split, ids in dataset.splits.items():
        for image_id in ids:
            try:
                cases.append(_prepare_image(dataset, image_id, split, settings, out_dir / "cases" / image_id, digest))
            except InvalidInputError as exc:
                problems.append(Problem(str(exc.path), exc.code or "F2", "error", exc.reason, image_id))
    if problems:
        raise DatasetError(problems, f"preparing {len(problems)} of {sum(map(len, dataset.splits.values()))} image(s) failed")
    write_json_atomic(
        out_dir / "fingerprint.json", {"intensity": None, "mean": settings.mean, "std": settings.std, "images": len(cases)}
    )
    manifest = {
        "source": str(dataset.root),
        "layout": "voc",
        "modalities": MODALITIES,
        "labels": {str(i): name for i, name in enumerate(dataset.classes)},
        "target_spacing": [1.0, 1.0, 1.0],
        "config_digest": digest,
        "cases": cases,
    }
    write_json_atomic(out_dir / "dataset.json", manifest)
    return out_dir / "dataset.json"


def _prepare_image(dataset, image_id: str, split: str, settings, case_dir: Path, digest: str) -> dict:
    rgb, label = load_voc_pair(dataset, image_id, settings.void_label)
    image = (rgb.astype(np.float32) / 255.0 - np.asarray(settings.mean, np.float32)) / np.asarray(settings.std, np.float32)
    save_npy_atomic(case_dir / "image.npy", np.ascontiguousarray(image.transpose(2, 1, 0)[..., None]))  # (3, W, H, 1)
    label = np.where(label == settings.void_label, 0, label).astype(np.uint8)
    save_npy_atomic(case_dir / "label.npy", np.ascontiguousarray(label.T[..., None]))  # (W, H, 1)
    sources = [dataset.image_path(image_id), dataset.label_path(image_id)]
    instances = load_voc_instances(dataset, image_id, label.shape)
    if instances is not None:
        instances = np.where(instances == settings.void_label, 0, instances).astype(np.uint8)
        save_npy_atomic(case_dir / "instances.npy", np.ascontiguousarray(instances.T[..., None]))  # (W, H, 1)
        sources.append(dataset.instance_path(image_id))
    record = {
        "case_id": image_id,
        "split": split,
        "source_digests": {str(p): file_digest(p) for p in sources},
        "config_digest": digest,
    }
    write_json_atomic(case_dir / "record.json", record)
    entry = {
        "case_id": image_id,
        "split": "train" if split == "train" else "test",
        "image": f"cases/{image_id}/image.npy",
        "label": f"cases/{image_id}/label.npy",
        "record": f"cases/{image_id}/record.json",
    }
    if instances is not None:
        entry["instances"] = f"cases/{image_id}/instances.npy"
    return entry
