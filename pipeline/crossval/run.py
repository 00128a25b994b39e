"""The ``crossval`` stage: out-of-fold predictions on each scan's own grid, and the decisions they support.

For every trained fold, each configuration's fold model predicts that fold's validation cases; the
probabilities are mapped back to the scan's original grid, where every configuration alone and the
ensemble of all of them are scored (Dice per class against the original label file). The best mean
Dice picks the configuration or ensemble (a tie goes to fewer models); the largest-component
postprocessing is then decided on that candidate's out-of-fold label maps
(:func:`pipeline.inference.postprocess.decide_postprocessing`). ``decisions.json`` is what
``infer`` and ``predict`` use by default.

Calibration (:mod:`pipeline.qa.calibration`): one temperature per model and one for the chosen ensemble, fitted by
NLL on out-of-fold voxels of the foreground and its neighbourhood (at most ``SAMPLES_PER_CASE`` per case, seeded).
Uncertainty (:mod:`pipeline.qa.uncertainty`): the Spearman correlation between each organ's mean boundary entropy
and its Dice over the out-of-fold cases says whether the entropy ranks masks by error. The probabilities of each case
wait in a temporary folder (float16, the foreground's box) between the two passes, so memory stays at one case.
"""

from __future__ import annotations

import json
import tempfile
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from pipeline.config import PipelineConfig
from pipeline.crossval.decisions import Decisions
from pipeline.crossval.splits import read_splits
from pipeline.data.layout import load_dataset
from pipeline.data.nifti import label_array, read_nifti
from pipeline.errors import InvalidInputError
from pipeline.inference.postprocess import (
    ObjectCounts,
    apply_postprocessing,
    decide_postprocessing,
    mean_dice_per_class,
    mean_dice_per_region,
    object_counts,
)
from pipeline.inference.predict import Predictor, load_predictor, restored_probabilities
from pipeline.io_utils import text_digest, write_json_atomic
from pipeline.preprocess.geometry import ras_spacing
from pipeline.preprocess.reading import read_case
from pipeline.qa.calibration import (
    NEIGHBOURHOOD_MM,
    apply_temperature,
    calibration_scores,
    fit_temperature,
    neighbourhood,
    sample_voxels,
)
from pipeline.qa.outputs import box_slices, padded_box
from pipeline.qa.uncertainty import BAND_VOXELS, entropy, organ_uncertainty
from pipeline.serving import log_served_model
from pipeline.tracking.mlflow_run import RunTracker, run_tags

SAMPLES_PER_CASE = 50_000


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
    samples: list[tuple[np.ndarray, np.ndarray]] = []  # per case: (models, C, n) probabilities, (n,) true labels
    num_classes = dataset.labels.num_classes
    with tempfile.TemporaryDirectory(prefix="segpipe-crossval-") as scratch:
        boxes = []
        for fold in cv.train_folds:
            predictor = _fold_predictor(cfg, roots, fold)
            for case_id in splits[fold]["val"]:
                if case_id not in cases:
                    raise InvalidInputError(cv.split_file, f"fold {fold} validates on unknown case {case_id}")
                image, affine, truth = read_case(cases[case_id], set(dataset.labels.values), cfg.checks)
                probabilities = np.stack([restored_probabilities(predictor, b, image, affine) for b in predictor.bundles])
                truths.append(truth)
                for subset in candidates:
                    labels[subset].append(probabilities[list(subset)].mean(axis=0).argmax(0).astype(truth.dtype))
                box = _keep_box(Path(scratch) / f"{len(truths)}.npy", probabilities, truth, ras_spacing(affine))
                samples.append(_sample(probabilities, truth, box, ras_spacing(affine), cfg.base.seed + len(truths)))
                boxes.append(box)
                del probabilities
        scores = {_name(names, s): mean_dice_per_class(labels[s], truths, num_classes) for s in candidates}
        best = max(candidates, key=lambda s: (round(float(scores[_name(names, s)].mean()), 6), -len(s)))
        counts = training_object_counts(dataset)
        decision = decide_postprocessing(labels[best], truths, num_classes, counts)
        final = [apply_postprocessing(p, decision) for p in labels[best]]
        after = mean_dice_per_class(final, truths, num_classes)
        regions = {k: round(v, 6) for k, v in mean_dice_per_region(final, truths, dataset.regions).items()}
        chosen = {**_describe(after, dataset), **regions}
        temperatures, calibration = _calibrate(samples, names, best)
        uncertainty = _uncertainty_ranking(Path(scratch), boxes, best, final, truths, temperatures["chosen"], dataset)
    result = Decisions(
        configurations=tuple(names[i] for i in best),
        models=tuple(Path(roots[i]) / f"fold_{k}" for i in best for k in cv.train_folds),
        postprocessing=decision.to_json(),
        object_counts=counts.to_json(),
        folds=tuple(cv.train_folds),
        cases=len(truths),
        scores={**{n: _describe(s, dataset) for n, s in scores.items()}, "chosen+postprocessing": chosen},
        temperature=temperatures["chosen"],
        temperatures=temperatures,
        calibration=calibration,
        uncertainty=uncertainty,
    )
    write_json_atomic(cv.decisions, result.model_dump(mode="json"))
    _track(cfg, result, splits)
    return result


def training_object_counts(dataset) -> ObjectCounts:
    """:func:`object_counts` of every labelled training case's label file (each scan's own grid).

    Raises:
        InvalidInputError: a label file cannot be read (naming its case).
    """
    declared = set(dataset.labels.values)
    labels = (label_array(read_nifti(c.label, c.case_id), declared, c.case_id) for c in dataset.split("train") if c.label)
    return object_counts(labels, dataset.labels.num_classes)


def _track(cfg: PipelineConfig, result: Decisions, splits: list[dict]) -> None:
    """One MLflow run with every candidate's out-of-fold Dice, the choice and the decisions file."""
    tracker = RunTracker(cfg.tracking)
    fingerprint = text_digest(json.dumps(splits, sort_keys=True))
    params = {"configurations": "+".join(result.configurations), "folds": str(list(result.folds)), "cases": str(result.cases)}
    tracker.start("crossval", params, {**run_tags("crossval", fingerprint), "postprocessing": str(result.postprocessing)})
    metrics = {f"oof_{name}_{key}": v for name, s in result.scores.items() for key, v in s.items()}  # "+" -> "_" in MLflow
    tracker.log_metrics(metrics, step=0)
    tracker.log_artifact(Path(cfg.crossval.decisions))
    log_served_model(tracker, Path(cfg.crossval.decisions), result.models)
    tracker.end()


def _keep_box(path: Path, probabilities: np.ndarray, truth: np.ndarray, spacing) -> tuple[slice, ...]:
    """Save the models' probabilities (float16) in the box of the foreground (truth or any prediction) plus margins."""
    foreground = (truth > 0) | (probabilities.mean(axis=0).argmax(0) > 0)
    start, stop = padded_box(foreground, spacing, NEIGHBOURHOOD_MM + BAND_VOXELS * max(spacing), whole_if_empty=True)
    box = box_slices(start, stop)
    np.save(path, probabilities[(slice(None), slice(None), *box)].astype(np.float16), allow_pickle=False)
    return box


def _sample(probabilities: np.ndarray, truth: np.ndarray, box, spacing, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``SAMPLES_PER_CASE`` voxels of the foreground and its neighbourhood: (models, C, n) and (n,)."""
    prediction = probabilities.mean(axis=0).argmax(0)
    chosen = sample_voxels(neighbourhood(truth, prediction, spacing), SAMPLES_PER_CASE, seed)
    flat = probabilities.reshape(*probabilities.shape[:2], -1)[:, :, chosen]
    return flat.astype(np.float32), truth.reshape(-1)[chosen].astype(np.int64)


def _calibrate(samples, names: list[str], best: tuple[int, ...]) -> tuple[dict[str, float], dict[str, float]]:
    """Temperatures of every model alone and of the chosen ensemble, and the chosen one's out-of-fold calibration."""
    probabilities = np.concatenate([p for p, _ in samples], axis=2)  # (models, C, n)
    truth = np.concatenate([t for _, t in samples])
    temperatures = {name: fit_temperature(probabilities[i], truth) for i, name in enumerate(names)}
    chosen = probabilities[list(best)].mean(axis=0)
    temperatures["chosen"] = fit_temperature(chosen, truth)
    scores = calibration_scores(chosen, truth, temperatures["chosen"])
    return temperatures, {f"oof_{k}": round(v, 6) for k, v in scores.items() if k != "temperature"}


def _uncertainty_ranking(scratch: Path, boxes, best, final, truths, temperature: float, dataset) -> dict[str, float]:
    """Spearman correlation of each (case, organ)'s mean boundary entropy with its Dice, over the out-of-fold cases."""
    from scipy.stats import spearmanr

    from pipeline.evaluation.metrics import dice_per_class

    organs = {lab.value: lab.name for lab in dataset.labels.foreground()}
    entropies, dices = [], []
    for index, (box, label, truth) in enumerate(zip(boxes, final, truths), start=1):
        mean = np.load(scratch / f"{index}.npy")[list(best)].astype(np.float32).mean(axis=0)
        entropy_box = entropy(apply_temperature(mean, temperature))
        scores = organ_uncertainty(entropy_box, label[box], organs)
        dice = dice_per_class(torch.from_numpy(label.astype(np.int64)), torch.from_numpy(truth.astype(np.int64)),
                              dataset.labels.num_classes).numpy()  # fmt: skip
        for name, d in zip(organs.values(), dice):
            entropies.append(scores[name]["entropy_boundary"])
            dices.append(float(d))
    rho = spearmanr(entropies, dices).statistic if len(set(entropies)) > 1 and len(set(dices)) > 1 else float("nan")
    return {"oof_spearman_boundary_entropy_vs_dice": round(float(rho), 4), "oof_pairs": len(dices)}


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
