"""Training data: preprocessed cases held in memory (or memory-mapped) and a patch sampler.

Sample ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: the case, the patch centre and
every augmentation draw come from a generator seeded with those three numbers. Sampling is
therefore identical with any number of DataLoader workers or DDP ranks, and a resumed run sees
exactly the patches an uninterrupted run would have seen (RELIABILITY T3).

A 2D model gets slices across its ``slice_axis`` (the plan's coarsest axis, z for axial scans): a patch of the two
other axes plus ``context_slices`` neighbours on each side stacked as channels (2.5D); the label is the centre slice.
A 3D model gets ``(x, y, z)`` patches.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from pipeline.errors import InvalidInputError

T = TypeVar("T")
logger = logging.getLogger(__name__)

CACHE_MEMORY_SHARE = 0.5  # train.cache=auto holds the arrays in memory when they need at most this share of free memory


@dataclass
class CaseArrays:
    """One preprocessed case: image (C, x, y, z) float32, label (x, y, z) uint8 or None, instance ids alike or None."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    foreground: dict[int, np.ndarray]  # class value -> (N, 3) voxel indices
    instances: np.ndarray | None = None  # natural track, where the VOC folder has SegmentationObject/


@dataclass(frozen=True)
class Manifest:
    """The preprocess stage's ``dataset.json``, resolved against its folder."""

    root: Path
    labels: dict[int, str]
    modalities: list[str]
    config_digest: str
    target_spacing: tuple[float, ...]
    cases: list[dict]

    @property
    def num_classes(self) -> int:
        return max(self.labels) + 1

    def split(self, name: str) -> list[dict]:
        return [c for c in self.cases if c["split"] == name]


def read_manifest(root: Path) -> Manifest:
    """Read ``<root>/dataset.json`` written by the preprocess stage.

    Raises:
        InvalidInputError: missing or malformed manifest (run ``segpipe preprocess`` first).
    """
    path = Path(root) / "dataset.json"
    try:
        raw = json.loads(path.read_text())
        labels = {int(k): v for k, v in raw["labels"].items()}
        spacing = tuple(float(v) for v in raw["target_spacing"])
        return Manifest(Path(root), labels, list(raw["modalities"]), raw["config_digest"], spacing, list(raw["cases"]))
    except FileNotFoundError:
        raise InvalidInputError(path, "no preprocessed manifest; run `segpipe preprocess` first") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(path, f"malformed preprocessed manifest ({exc!r})") from None


def split_train_val(cases: list[dict], val_cases: int, seed: int, need_labels: bool = True) -> tuple[list[dict], list[dict]]:
    """Hold out ``val_cases`` of ``cases`` (labelled ones only if ``need_labels``): a seeded, order-independent choice.

    Raises:
        InvalidInputError: fewer than ``val_cases + 1`` usable cases.
    """
    labelled = sorted((c for c in cases if c.get("label") or not need_labels), key=lambda c: c["case_id"])
    if len(labelled) <= val_cases:
        kind = "labelled training" if need_labels else "pretraining"
        raise InvalidInputError(
            Path("dataset.json"), f"{len(labelled)} {kind} case(s); need more than train.val_cases={val_cases}"
        )
    order = np.random.default_rng(seed).permutation(len(labelled))
    val = {labelled[i]["case_id"] for i in order[:val_cases]}
    return [c for c in labelled if c["case_id"] not in val], [c for c in labelled if c["case_id"] in val]


def fold_train_val(cases: list[dict], splits: list[dict], fold: int, source: Path) -> tuple[list[dict], list[dict]]:
    """Training and validation cases of one cross-validation fold (from the split file).

    Raises:
        InvalidInputError: the fold does not exist, or a case of the split is not in the preprocessed data.
    """
    if not 0 <= fold < len(splits):
        raise InvalidInputError(source, f"train.fold={fold}, but the split file has folds 0..{len(splits) - 1}")
    by_id = {c["case_id"]: c for c in cases if c.get("label")}
    missing = sorted((set(splits[fold]["train"]) | set(splits[fold]["val"])) - set(by_id))
    if missing:
        raise InvalidInputError(source, f"fold {fold} names cases without preprocessed labels: {missing}")
    return [by_id[c] for c in sorted(splits[fold]["train"])], [by_id[c] for c in sorted(splits[fold]["val"])]


def available_memory_bytes() -> float:
    """Memory the system can give this process now (``MemAvailable`` on Linux; free pages elsewhere; infinite when
    neither is known)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def use_mmap(cache: str, manifest: Manifest, entries: list[dict]) -> bool:
    """Whether the training arrays are memory-mapped: ``train.cache`` ``mmap`` or ``memory`` as said; ``auto`` maps them
    when their ``.npy`` files need more than ``CACHE_MEMORY_SHARE`` of the available memory (a large dataset on a GPU
    profile's full-resolution grid), so training reads them from disk instead of failing for memory. The samples, and
    so the weights, are the same either way: only where the bytes live differs."""
    if cache != "auto":
        return cache == "mmap"
    needed = sum((manifest.root / e[k]).stat().st_size for e in entries for k in ("image", "label", "instances") if e.get(k))
    available = available_memory_bytes()
    mapped = needed > CACHE_MEMORY_SHARE * available
    if mapped:
        logger.warning(
            "train.cache=auto: the %d training cases' arrays need %.1f GiB, more than %.0f%% of the %.1f GiB available: "
            "memory-mapping them (set train.cache=memory to insist)",
            len(entries), needed / 2**30, CACHE_MEMORY_SHARE * 100, available / 2**30,
        )  # fmt: skip
    return mapped


def load_case(manifest: Manifest, entry: dict, mmap: bool = False) -> CaseArrays:
    """Load one case's arrays (fully into memory unless ``mmap``) and index its foreground voxels."""
    mode = "r" if mmap else None
    image = np.load(manifest.root / entry["image"], mmap_mode=mode, allow_pickle=False)
    label = np.load(manifest.root / entry["label"], mmap_mode=mode, allow_pickle=False) if entry.get("label") else None
    foreground = {}
    if label is not None:
        for value in range(1, manifest.num_classes):
            idx = np.argwhere(np.asarray(label) == value).astype(np.int32)
            if len(idx):
                foreground[value] = idx
    instances = (
        np.load(manifest.root / entry["instances"], mmap_mode=mode, allow_pickle=False) if entry.get("instances") else None
    )
    return CaseArrays(entry["case_id"], image, label, foreground, instances)


def crop_with_padding(array: np.ndarray, start: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Crop the last ``len(size)`` axes at ``start`` (may be negative / past the end); pad with zeros."""
    lead = array.ndim - len(size)
    out = np.zeros(array.shape[:lead] + tuple(size), dtype=array.dtype)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for axis, (s, n) in enumerate(zip(start, size)):
        dim = array.shape[lead + axis]
        lo, hi = max(int(s), 0), min(int(s) + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    out[tuple(dst)] = array[tuple(src)]
    return out


def in_slicing_order(case: CaseArrays, slice_axis: int) -> CaseArrays:
    """The case with ``slice_axis`` moved last (views, no copy), so 2D patches are slices across it and their two axes
    keep their order: nnU-Net's ``transpose_forward`` for a scan whose coarse axis is not z (e.g. thick sagittal slices)."""
    if slice_axis == 2:
        return case
    order = [axis for axis in range(3) if axis != slice_axis] + [slice_axis]
    moved = lambda array: None if array is None else np.moveaxis(array, slice_axis, -1)  # noqa: E731
    return CaseArrays(
        case.case_id,
        np.moveaxis(case.image, slice_axis + 1, -1),
        moved(case.label),
        {value: voxels[:, order] for value, voxels in case.foreground.items()},
        moved(case.instances),
    )


class PatchDataset(TorchDataset):
    """Foreground-oversampled random patches; ``len`` = samples per epoch (all ranks together).

    Args:
        cases: training cases (with labels).
        patch_size: ``(x, y)`` for 2D models or ``(x, y, z)`` for 3D.
        context_slices: 2.5D neighbours each side (2D only).
        foreground_fraction: share of patches centred on a voxel of a randomly chosen present class.
        samples_per_epoch: dataset length.
        seed: base seed; call :meth:`set_epoch` before each epoch.
        transform: ``transform(sample, seed) -> sample`` applied to the tensors (augmentation).
        weight_map: ``weight_map(label) -> weights`` adds a per-voxel ``weight`` (e.g. U-Net border weights).
        slice_axis: the axis 2D models slice across (:func:`in_slicing_order`); 2 = axial.
    """

    def __init__(
        self,
        cases: list[CaseArrays],
        patch_size: tuple[int, ...],
        context_slices: int,
        foreground_fraction: float,
        samples_per_epoch: int,
        seed: int,
        transform: Callable[[dict, int], dict] | None = None,
        weight_map: Callable[[np.ndarray], np.ndarray] | None = None,
        slice_axis: int = 2,
    ) -> None:
        if len(patch_size) == 2:
            cases = [in_slicing_order(case, slice_axis) for case in cases]
        self.cases, self.patch_size, self.context = cases, tuple(patch_size), context_slices
        self.foreground_fraction, self.length, self.seed = foreground_fraction, samples_per_epoch, seed
        self.transform, self.weight_map, self.epoch = transform, weight_map, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        case = self.cases[rng.integers(len(self.cases))]
        centre = self._centre(case, rng)
        image, label = self._extract(case, centre)
        sample = {"image": torch.from_numpy(np.ascontiguousarray(image))}
        if label is not None:
            sample["label"] = torch.from_numpy(label[None].astype(np.int64))
        if case.instances is not None:  # cropped exactly like the label (and augmented with it)
            sample["instances"] = torch.from_numpy(self._crop_map(case.instances, centre)[None].astype(np.int64))
        if self.transform is not None:
            sample = self.transform(sample, int(rng.integers(2**31)))
        if self.weight_map is not None:
            sample["weight"] = torch.from_numpy(self.weight_map(sample["label"][0].numpy()))[None]
        return sample

    def _centre(self, case: CaseArrays, rng: np.random.Generator) -> np.ndarray:
        if case.foreground and rng.random() < self.foreground_fraction:
            values = sorted(case.foreground)
            voxels = case.foreground[values[rng.integers(len(values))]]
            return voxels[rng.integers(len(voxels))].astype(np.int64)
        return np.array([rng.integers(n) for n in case.image.shape[1:]], dtype=np.int64)

    def _extract(self, case: CaseArrays, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The image patch at ``centre`` and the same patch of the label."""
        if len(self.patch_size) == 3:
            start = centre - np.asarray(self.patch_size) // 2
            return crop_with_padding(case.image, start, self.patch_size), self._crop_map(case.label, centre)
        size = (*self.patch_size, 2 * self.context + 1)
        start = np.array([centre[0] - size[0] // 2, centre[1] - size[1] // 2, centre[2] - self.context])
        slab = crop_with_padding(case.image, start, size)  # (C, x, y, 2k+1)
        image = np.moveaxis(slab, -1, 1).reshape(-1, *self.patch_size)  # channels: modality-major, then slice
        return image, self._crop_map(case.label, centre)

    def _crop_map(self, array: np.ndarray | None, centre: np.ndarray) -> np.ndarray | None:
        """The patch of a per-voxel map (class labels or instance ids) at ``centre``; for 2D models, of its centre slice."""
        if array is None:
            return None
        start = centre[: len(self.patch_size)] - np.asarray(self.patch_size) // 2
        if len(self.patch_size) == 3:
            return crop_with_padding(array, start, self.patch_size)
        return crop_with_padding(array[:, :, centre[2]], start, self.patch_size)


_END = object()


@dataclass
class _Failure:
    error: BaseException


def prefetched(batches: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Yield the items of ``batches`` while a background thread prepares up to ``depth`` more.

    Sampling and augmentation then overlap the network's forward and backward pass (numpy, MONAI and torch release the
    GIL inside their kernels). Items come in their original order and are the same objects the loader makes, so
    training is bit-identical with or without prefetching. An error in the thread is raised here, at the item it
    would have been; leaving the loop early stops the thread after its current item. ``depth=0`` is a plain loop.
    """
    if depth <= 0:
        yield from batches
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not offer(item):
                    return
            offer(_END)
        except BaseException as error:  # handed to the consumer, which raises it
            offer(_Failure(error))

    thread = threading.Thread(target=produce, name="segpipe-prefetch", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not _END:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
