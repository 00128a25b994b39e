"""Cross-validation split files: ``[{"train": [case ids], "val": [case ids]}, ...]``, one entry per fold.

The default split is seeded and deterministic: the labelled training cases, sorted by id, shuffled
with ``crossval.seed`` and dealt into ``crossval.folds`` validation groups of near-equal size (the
first groups take the remainder), as scikit-learn's ``KFold(shuffle=True)`` does. A user's own split
file is honoured after checking it: every validation id must be a labelled training case, each case
in exactly one validation fold, and no fold may train on its own validation cases.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipeline.errors import InvalidInputError
from pipeline.io_utils import write_json_atomic

logger = logging.getLogger(__name__)


def make_splits(case_ids: list[str], folds: int, seed: int) -> list[dict[str, list[str]]]:
    """Seeded k-fold split of ``case_ids``.

    Raises:
        ValueError: fewer cases than folds.
    """
    ids = sorted(case_ids)
    if len(ids) < folds:
        raise ValueError(f"{len(ids)} labelled case(s) cannot make {folds} folds")
    order = np.random.default_rng(seed).permutation(len(ids))
    sizes = np.full(folds, len(ids) // folds) + (np.arange(folds) < len(ids) % folds)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    splits = []
    for k in range(folds):
        val = sorted(ids[i] for i in order[bounds[k] : bounds[k + 1]])
        splits.append({"train": [c for c in ids if c not in set(val)], "val": val})
    return splits


def check_splits(splits: list[dict], case_ids: list[str], source: Path) -> list[dict[str, list[str]]]:
    """Validate a split list against the labelled cases; every problem is listed in one error.

    Raises:
        InvalidInputError: naming ``source`` and each problem.
    """
    known, problems, seen = set(case_ids), [], {}
    if not isinstance(splits, list) or not splits:
        raise InvalidInputError(source, "a split file is a non-empty list of {'train': [...], 'val': [...]} entries")
    for k, fold in enumerate(splits):
        if not isinstance(fold, dict) or not {"train", "val"} <= set(fold):
            problems.append(f"fold {k} needs 'train' and 'val' lists")
            continue
        unknown = sorted((set(fold["train"]) | set(fold["val"])) - known)
        if unknown:
            problems.append(f"fold {k} names cases that are not labelled training cases: {unknown}")
        overlap = sorted(set(fold["train"]) & set(fold["val"]))
        if overlap:
            problems.append(f"fold {k} trains on its own validation cases: {overlap}")
        for case in fold["val"]:
            if case in seen:
                problems.append(f"case {case} is validated in folds {seen[case]} and {k}")
            seen[case] = k
    if problems:
        raise InvalidInputError(source, "invalid cross-validation split: " + "; ".join(problems))
    return [{"train": list(f["train"]), "val": list(f["val"])} for f in splits]


def write_splits(case_ids: list[str], folds: int, seed: int, path: Path, custom: Path | None = None) -> list[dict]:
    """Write the split file: the user's ``custom`` file (checked) or the seeded default. A dataset with fewer labelled
    cases than ``folds`` gets one fold per case (leave-one-out), with a warning.

    Raises:
        InvalidInputError: an invalid custom split, or fewer than two labelled cases.
    """
    if custom is not None:
        splits = check_splits(read_json(custom), case_ids, custom)
    else:
        if 2 <= len(case_ids) < folds:
            logger.warning("%d labelled cases: %d folds instead of crossval.folds=%d", len(case_ids), len(case_ids), folds)
            folds = len(case_ids)
        try:
            splits = make_splits(case_ids, folds, seed)
        except ValueError as exc:
            raise InvalidInputError(path, str(exc)) from None
    write_json_atomic(path, splits)
    return splits


def read_splits(path: Path) -> list[dict[str, list[str]]]:
    """Read the split file written by the plan stage.

    Raises:
        InvalidInputError: missing or unreadable.
    """
    return read_json(path)


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InvalidInputError(path, "no split file: run `segpipe plan` (it writes the cross-validation folds)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(path, f"unreadable split file ({exc})") from None
