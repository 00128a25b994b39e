"""The ``crossval`` stage: out-of-fold predictions on each scan's own grid, and the decisions they support.

For every trained fold, each configuration's fold model predicts that fold's validation cases; the
probabilities are mapped back to the scan's original grid, where every configuration alone and the
ensemble of all of them are scored (Dice per class against the original label file). The best mean
Dice picks the configuration or ensemble (a tie goes to fewer models); the largest-component
postprocessing is then decided on that candidate's out-of-fold label maps
(:func:`pipeline.inference.postprocess.decide_postprocessing`). ``decisions.json`` is what
``infer`` and ``predict`` use by default.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.crossval.decisions import Decisions
from pipeline.crossval.splits import read_splits
from pipeline.data.layout import load_dataset
from pipeline.errors import InvalidInputError
from pipeline.inference.postprocess import apply_postprocessing, decide_postprocessing, mean_dice_per_class
from pipeline.inference.predict import Predictor, load_predictor, restored_probabilities
from pipeline.io_utils import text_digest, write_json_atomic
from pipeline.preprocess.reading import read_case
from pipeline.tracking.mlflow_run import RunTracker, run_tags


def crossvalidate(cfg: PipelineConfig, roots: tuple[Path, ...]) -> Decisions:
    """Score out-of-fold predictions of each configuration in ``roots`` (``<root>/fold_<k>``) and their ensembles.

    Raises:
        InvalidInputError: a fold model is missing, or the split names unknown cases.
    """
    cv = cfg.crossval
    dataset = load_dataset(cfg.data.root)
    splits = read_splits(cv.split_file)
    cases = {c.case_id: c for c in dataset.split("train")}
    names = [Path(r).name for r in roots]
    candidates = [subset for size in range(1, len(roots) + 1) for subset in combinations(range(len(roots)), size)]
    labels: dict[tuple[int, ...], list[np.ndarray]] = {c: [] for c in candidates}
    truths: list[np.ndarray] = []
    num_classes = dataset.labels.num_classes
    for fold in cv.train_folds:
        predictor = _fold_predictor(cfg, roots, fold)
        for case_id in splits[fold]["val"]:
            if case_id not in cases:
                raise InvalidInputError(cv.split_file, f"fold {fold} validates on unknown case {case_id}")
            image, affine, truth = read_case(cases[case_id], set(dataset.labels.values), cfg.checks)
            probabilities = [restored_probabilities(predictor, b, image, affine) for b in predictor.bundles]
            truths.append(truth)
            for subset in candidates:
                labels[subset].append(np.mean([probabilities[i] for i in subset], axis=0).argmax(0).astype(truth.dtype))
    scores = {_name(names, s): mean_dice_per_class(labels[s], truths, num_classes) for s in candidates}
    best = max(candidates, key=lambda s: (round(float(scores[_name(names, s)].mean()), 6), -len(s)))
    decision = decide_postprocessing(labels[best], truths, num_classes)
    after = mean_dice_per_class([apply_postprocessing(p, decision) for p in labels[best]], truths, num_classes)
    result = Decisions(
        configurations=tuple(names[i] for i in best),
        models=tuple(Path(roots[i]) / f"fold_{k}" for i in best for k in cv.train_folds),
        postprocessing=decision.to_json(),
        folds=tuple(cv.train_folds),
        cases=len(truths),
        scores={**{n: _describe(s, dataset) for n, s in scores.items()}, "chosen+postprocessing": _describe(after, dataset)},
    )
    write_json_atomic(cv.decisions, result.model_dump(mode="json"))
    _track(cfg, result, splits)
    return result


def _track(cfg: PipelineConfig, result: Decisions, splits: list[dict]) -> None:
    """One MLflow run with every candidate's out-of-fold Dice, the choice and the decisions file."""
    tracker = RunTracker(cfg.tracking)
    fingerprint = text_digest(json.dumps(splits, sort_keys=True))
    params = {"configurations": "+".join(result.configurations), "folds": str(list(result.folds)), "cases": str(result.cases)}
    tracker.start("crossval", params, {**run_tags("crossval", fingerprint), "postprocessing": str(result.postprocessing)})
    metrics = {f"oof_{name}_{key}".replace("+", "_"): v for name, s in result.scores.items() for key, v in s.items()}
    tracker.log_metrics(metrics, step=0)
    tracker.log_artifact(Path(cfg.crossval.decisions))
    tracker.end()


def _fold_predictor(cfg: PipelineConfig, roots: tuple[Path, ...], fold: int) -> Predictor:
    folders = tuple(Path(r) / f"fold_{fold}" for r in roots)
    missing = [str(f) for f in folders if not (f / "model_card.json").is_file()]
    if missing:
        raise InvalidInputError(folders[0], f"fold {fold} has no trained model in {missing}: train it first")
    return load_predictor(cfg.infer.model_copy(update={"models": folders, "largest_component": ()}))


def _name(names: list[str], subset: tuple[int, ...]) -> str:
    return "+".join(names[i] for i in subset)


def _describe(dice: np.ndarray, dataset) -> dict[str, float]:
    per_class = {f"dice_{lab.name}": round(float(d), 6) for lab, d in zip(dataset.labels.foreground(), dice)}
    return {"dice_mean": round(float(dice.mean()), 6), **per_class}
