"""Dataset layouts: Medical Segmentation Decathlon (MSD) and nnU-Net v2 raw, read by one code path.

Both layouts have a ``dataset.json`` at the root. MSD lists files explicitly (``training`` with
image/label pairs, ``test`` with images, ``modality``, ``labels`` as ``{"id": "name"}``); nnU-Net v2
names files by convention (``imagesTr/CASE_0000.nii.gz``, ``labelsTr/CASE.nii.gz``, ``channel_names``,
``labels`` as ``{"name": id}``, ``file_ending``). Our extension, used by the phantoms: an optional
``unlabeled`` list (MSD) or ``imagesUnlabeled/`` folder (both), and ``labelsTs/`` ground truth for
test images when present. A multi-modal MSD dataset (``Task01_BrainTumour``, ``Task05_Prostate``) stores every
channel of a case in one 4D file, ``(x, y, z, C)`` in the order of ``modality``; its cases carry
``packed_channels = C`` and every reader splits the 4th axis (:func:`pipeline.data.nifti.channel_volumes`).
Hidden files (``._*`` from macOS archives, as in the MSD tarballs) are ignored.
nnU-Net v2's region-based labels (``"tumor core": [2, 3]``) are read by
:func:`pipeline.data.labels.labels_and_regions`: the label maps' values are trained, ``Dataset.regions`` are scored too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.data.labels import LabelRegistry, Region, labels_and_regions
from pipeline.data.nifti import nifti_stem
from pipeline.errors import DatasetError, Problem

Split = Literal["train", "test", "unlabeled"]
NIFTI_ENDINGS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Case:
    """One scan: its image channels, its label (if any) and which split it belongs to."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    split: Split
    packed_channels: int = 1  # channels stored along the 4th axis of each image file (MSD multi-modal: all of them)


@dataclass(frozen=True)
class Dataset:
    """A dataset read from disk."""

    root: Path
    name: str
    layout: Literal["msd", "nnunetv2"]
    modalities: tuple[str, ...]
    labels: LabelRegistry
    cases: tuple[Case, ...]
    problems: tuple[Problem, ...] = field(default=())
    regions: tuple[Region, ...] = field(default=())  # region-based nnU-Net v2 labels: scored besides the label values

    @property
    def is_ct(self) -> bool:
        """True when the first channel is CT (drives intensity normalisation)."""
        return self.modalities[0].upper() == "CT"

    def split(self, name: Split) -> list[Case]:
        """Cases of one split, in a stable order."""
        return [case for case in self.cases if case.split == name]


def load_dataset(root: Path, strict: bool = True) -> Dataset:
    """Read ``root/dataset.json`` (MSD or nnU-Net v2) and list the cases.

    Args:
        root: dataset folder.
        strict: raise on any problem below.

    Returns:
        The dataset; ``problems`` holds every missing or orphaned file (row F6) and label ids with gaps (row V9).

    Raises:
        DatasetError: no/invalid dataset.json, or (strict) any of those problems, all listed.
    """
    root = Path(root)
    meta = _read_dataset_json(root)
    if "channel_names" in meta:
        dataset = _load_nnunetv2(root, meta)
    elif "training" in meta or "modality" in meta:
        dataset = _load_msd(root, meta)
    else:
        raise DatasetError(
            [Problem(str(root / "dataset.json"), "F6", "error", "neither MSD ('training') nor nnU-Net v2 ('channel_names')")]
        )
    if strict and dataset.problems:
        raise DatasetError(list(dataset.problems), f"dataset {root} cannot be used as it is")
    return dataset


def _read_dataset_json(root: Path) -> dict:
    path = root / "dataset.json"
    if not root.is_dir():
        raise DatasetError([Problem(str(root), "F6", "error", "dataset folder does not exist")])
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError([Problem(str(path), "F6", "error", "missing dataset.json")]) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError([Problem(str(path), "F2", "error", f"cannot parse dataset.json: {exc}")]) from None
    if not isinstance(meta, dict):
        raise DatasetError([Problem(str(path), "F2", "error", "dataset.json must hold a JSON object")])
    return meta


def _load_msd(root: Path, meta: dict) -> Dataset:
    json_path = str(root / "dataset.json")
    modalities = tuple(str(v) for _, v in sorted(meta.get("modality", {"0": "CT"}).items(), key=lambda kv: int(kv[0])))
    labels = LabelRegistry.from_mapping({int(k): str(v) for k, v in meta.get("labels", {"0": "background"}).items()})
    packed = len(modalities)  # MSD keeps every channel of a case in one (4D, when several) file
    problems: list[Problem] = []
    cases = []
    for split in ("training", "test", "unlabeled"):
        for index, entry in enumerate(_entries(meta, split, json_path, problems)):
            image, label = _entry_files(entry, split, index, json_path, problems)
            if image is None:
                continue
            image = root / image
            if split == "training":
                cases.append(Case(nifti_stem(image), (image,), root / label, "train", packed))
            else:
                test_label = _test_label(root, image) if split == "test" else None
                cases.append(Case(nifti_stem(image), (image,), test_label, split, packed))
    for case in cases:
        problems += _missing(case, json_path)
    problems += _orphans(
        root,
        "imagesTr",
        {resolved(c.images[0]) for c in cases if c.split == "train"},
        "image without label or dataset.json entry",
    )
    problems += _orphans(
        root,
        "labelsTr",
        {resolved(c.label) for c in cases if c.label and c.split == "train"},
        "label without image or dataset.json entry",
    )
    problems += _duplicates(cases, json_path)
    problems += _label_gaps(labels, json_path)
    return Dataset(root, str(meta.get("name", root.name)), "msd", modalities, labels, tuple(cases), tuple(problems))


def _label_gaps(labels: LabelRegistry, json_path: str) -> list[Problem]:
    """Row V9: declared label ids must be 0, 1, ..., N (nnU-Net v2's rule). The networks predict one channel per id
    and every score is indexed by it, so a gap ({0, 1, 3}) would train and score a class that does not exist."""
    declared = sorted(labels.values)
    missing = sorted(set(range(max(declared, default=0) + 1)) - set(declared))  # no labels at all: 0 is missing
    if not missing:
        return []
    message = (f"label ids must be 0, 1, ..., N without gaps: 'labels' declares {declared}, missing {missing}; "
               "renumber dataset.json and the label maps")  # fmt: skip
    return [Problem(json_path, "V9", "error", message)]


def _load_nnunetv2(root: Path, meta: dict) -> Dataset:
    json_path = str(root / "dataset.json")
    ending = str(meta.get("file_ending", ".nii.gz"))
    channels = sorted(meta["channel_names"].items(), key=lambda kv: int(kv[0]))
    modalities = tuple(str(v) for _, v in channels)
    try:
        mapping, regions = labels_and_regions(meta.get("labels", {"background": 0}))
    except ValueError as exc:
        raise DatasetError([Problem(json_path, "V10", "error", f"'labels': {exc}")]) from None
    labels = LabelRegistry.from_mapping(mapping)
    problems: list[Problem] = []
    cases: list[Case] = []
    for split, folder in (("train", "imagesTr"), ("test", "imagesTs"), ("unlabeled", "imagesUnlabeled")):
        for case_id in _nnunet_case_ids(root / folder, ending):
            images = tuple(root / folder / f"{case_id}_{c:04d}{ending}" for c in range(len(channels)))
            label = root / "labelsTr" / f"{case_id}{ending}" if split == "train" else None
            if split == "test":
                label = _test_label(root, images[0], case_id + ending)
            cases.append(Case(case_id, images, label, split))
    for case in cases:
        problems += _missing(case, json_path)
    expected_labels = {resolved(root / "labelsTr" / f"{c.case_id}{ending}") for c in cases if c.split == "train"}
    problems += _orphans(root, "labelsTr", expected_labels, "label without image")
    problems += _duplicates(cases, json_path)
    problems += _label_gaps(labels, json_path)
    declared = meta.get("numTraining")
    n_train = sum(c.split == "train" for c in cases)
    if declared is not None and declared != n_train:
        problems.append(Problem(json_path, "F6", "error", f"numTraining is {declared} but imagesTr holds {n_train} cases"))
    name = str(meta.get("name", root.name))
    return Dataset(root, name, "nnunetv2", modalities, labels, tuple(cases), tuple(problems), regions)


def _entries(meta: dict, key: str, json_path: str, problems: list[Problem]) -> list:
    entries = meta.get(key, [])
    if isinstance(entries, list):
        return entries
    problems.append(Problem(json_path, "F2", "error", f"'{key}' must be a list of entries, got {type(entries).__name__}"))
    return []


def _entry_files(entry, key: str, index: int, json_path: str, problems: list[Problem]) -> tuple[str | None, str | None]:
    """(image, label) of one MSD entry; a malformed entry becomes a problem naming the key and position."""
    needed = ("image", "label") if key == "training" else ("image",)
    if key != "training" and isinstance(entry, str):
        return entry, None
    if not isinstance(entry, dict):
        problems.append(Problem(json_path, "F2", "error", f"{key}[{index}] must be an object with {list(needed)}, got {entry!r}"))
        return None, None
    absent = [k for k in needed if not isinstance(entry.get(k), str) or not entry.get(k)]
    if absent:
        problems.append(
            Problem(json_path, "F2", "error", f"{key}[{index}] {entry!r} has no {' or '.join(map(repr, absent))} path")
        )
        return None, None
    return entry["image"], entry.get("label")


def _nnunet_case_ids(folder: Path, ending: str) -> list[str]:
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")
    ids = {m.group(1) for p in _visible_files(folder) if (m := pattern.match(p.name))}
    return sorted(ids)


def _test_label(root: Path, image: Path, name: str | None = None) -> Path | None:
    candidate = root / "labelsTs" / (name or image.name)
    return candidate if candidate.exists() else None


def _visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _missing(case: Case, json_path: str) -> list[Problem]:
    paths = [*case.images, *([case.label] if case.label else [])]
    problems = []
    for path in paths:
        if path.exists():
            continue
        if path.is_symlink():
            message = "a symbolic link that does not resolve (broken, or a loop): cannot read"
            problems.append(Problem(str(path), "F2", "error", message, case.case_id))
        else:
            message = f"listed for case {case.case_id} ({case.split}) in {json_path} but missing"
            problems.append(Problem(str(path), "F6", "error", message, case.case_id))
    return problems


def _orphans(root: Path, folder: str, expected: set[Path], what: str) -> list[Problem]:
    directory = root / folder
    if not directory.is_dir():
        return []
    return [
        Problem(str(p), "F6", "error", what)
        for p in _visible_files(directory)
        if p.name.endswith(NIFTI_ENDINGS) and resolved(p) not in expected
    ]


def resolved(path: Path) -> Path:
    """``path.resolve()``, or its absolute form where a symlink loop makes it unresolvable (read later reports it)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return path.absolute()


def _duplicates(cases: list[Case], json_path: str) -> list[Problem]:
    """A case id listed twice is an error; one in both training and test sets is test leakage (row F9)."""
    seen: dict[str, Case] = {}
    problems = []
    for case in cases:
        first = seen.get(case.case_id)
        if first is not None and {first.split, case.split} == {"train", "test"}:
            message = (
                f"case id {case.case_id!r} is in both the training ({first.images[0]}) and the test set ({case.images[0]}): "
                "test leakage, and their preprocessed arrays would overwrite each other; rename or remove one"
            )
            problems.append(Problem(str(case.images[0]), "F9", "error", message, case.case_id))
        elif first is not None:
            problems.append(Problem(json_path, "F6", "error", f"case id {case.case_id!r} appears twice", case.case_id))
        seen.setdefault(case.case_id, case)
    return problems
