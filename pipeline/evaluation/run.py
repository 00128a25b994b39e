"""The ``evaluate`` stage: metrics of the predicted test masks in each scan's original geometry, QC report, MLflow run.

Outputs under ``evaluate.reports_dir``: ``metrics.json`` (DVC metrics, ``cache: false``: mean of
each metric per organ and over organs), and ``details/`` with ``cases.csv`` (one row per case and
organ; for a region-based dataset also one per case and region, ``region <name>``, beside
``<metric>_region <name>`` and ``<metric>_regions_mean`` in ``metrics.json``), ``qc/<case>.png`` overlays and
``qc/index.html``. Predictions must lie exactly on their scan (shape and affine); a case that does not is reported
with every other problem.

Where ``infer`` wrote them, it also scores how far the masks can be trusted:
- calibration: expected calibration error (MONAI), Brier score and NLL on the foreground and its
  neighbourhood, before and after the ensemble's temperature (``ece_before`` ... ``nll_after``), and
  ``details/reliability.png``;
- uncertainty: per case and organ the mean predictive entropy inside the organ and in its boundary band
  (``cases.csv``), the case's predicted risk (mean boundary entropy; the QC page is sorted by it), the Spearman
  correlation of boundary entropy with Dice (``uncertainty_spearman_dice``), and ``qc/<case>_uncertainty.png``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.crossval.decisions import read_decisions
from pipeline.data.header import read_checked, same_grid
from pipeline.data.layout import Case, load_dataset
from pipeline.data.nifti import channel_volumes, label_array
from pipeline.errors import DatasetError, InvalidInputError, Problem
from pipeline.evaluation.metrics import METRIC_NAMES, case_metrics, region_metrics
from pipeline.evaluation.qc import (
    display_window,
    save_case_qc,
    save_reliability_diagram,
    save_uncertainty_overlay,
    write_html_report,
)
from pipeline.io_utils import atomic_path, file_digest, text_digest, write_json_atomic
from pipeline.parallel import run_guarded
from pipeline.qa.calibration import ECE_BINS, apply_temperature, calibration_scores, neighbourhood, sample_voxels
from pipeline.qa.outputs import load_probability_box, read_uncertainty_maps
from pipeline.qa.uncertainty import organ_uncertainty
from pipeline.tracking.mlflow_run import RunTracker, run_tags

logger = logging.getLogger(__name__)

SAMPLES_PER_CASE = 50_000
UNCERTAINTY_COLUMNS = ("entropy_inside", "entropy_boundary")


def evaluate_dataset(cfg: PipelineConfig, stage: str = "evaluate") -> dict[str, float]:
    """Score every test case that has ground truth (``labelsTs``) against ``<infer.out_dir>/<case>.nii.gz``; with none,
    report cross-validation's out-of-fold scores instead (``oof_*``, ``cases: 0``).

    Returns:
        The aggregate metrics written to ``metrics.json``.

    Raises:
        DatasetError: no test case with ground truth and no ``decisions.json``, or missing/unreadable/misaligned
            predictions (all listed).
    """
    dataset = load_dataset(cfg.data.root)
    cases = [c for c in dataset.split("test") if c.label is not None]
    if not cases:
        return _out_of_fold_report(cfg, stage)
    labels = {lab.value: lab.name for lab in dataset.labels.foreground()}
    details = Path(cfg.evaluate.reports_dir) / "details"
    rows, problems = [], []
    for index, case in enumerate(cases):
        score = partial(_score_case, cfg, case, dataset, labels, details, with_qc=_wants_qc(cfg, index), seed=index)
        outcome = run_guarded(case.case_id, _prediction_path(cfg, case), score)
        (problems if isinstance(outcome, Problem) else rows).append(outcome)
    if problems:
        raise DatasetError(problems, f"evaluation failed for {len({p.case for p in problems})} of {len(cases)} case(s)")
    aggregate = {**aggregate_metrics(rows, labels), **trust_metrics(rows, details)}
    _write_outputs(cfg, rows, aggregate, details)
    _track(cfg, stage, cases, aggregate, details)
    return aggregate


def _out_of_fold_report(cfg: PipelineConfig, stage: str) -> dict[str, float]:
    """Without test ground truth (every MSD task: ``imagesTs`` has no labels), the scores to go by are cross-validation's:
    the chosen candidate's out-of-fold Dice and calibration, reported as ``oof_*`` beside ``cases: 0``.

    Raises:
        DatasetError: no ``decisions.json`` either, so there is nothing to report.
    """
    try:
        decisions = read_decisions(cfg.crossval.decisions)
    except InvalidInputError as exc:
        reason = f"no test case with ground truth (labelsTs/), and no out-of-fold scores to report instead: {exc}"
        raise DatasetError([Problem(str(cfg.data.root), "F6", "error", reason)]) from None
    logger.warning(
        "no test case of %s has ground truth (labelsTs/): %s holds cross-validation's out-of-fold scores (oof_*) of %d case(s)",
        cfg.data.root, Path(cfg.evaluate.reports_dir) / "metrics.json", decisions.cases,
    )  # fmt: skip
    scores = decisions.scores["chosen+postprocessing"]
    aggregate = {"cases": 0, "oof_cases": decisions.cases, **{f"oof_{k}": v for k, v in scores.items()}}
    aggregate.update({k: v for k, v in decisions.calibration.items() if k.startswith("oof_")})
    details = Path(cfg.evaluate.reports_dir) / "details"
    _write_outputs(cfg, [], aggregate, details)
    _track(cfg, stage, [], aggregate, details)
    return aggregate


def _wants_qc(cfg: PipelineConfig, index: int) -> bool:
    return cfg.evaluate.qc_cases is None or index < cfg.evaluate.qc_cases


def _prediction_path(cfg: PipelineConfig, case: Case) -> Path:
    return Path(cfg.infer.out_dir) / f"{case.case_id}.nii.gz"


def _score_case(cfg, case: Case, dataset, labels: dict[int, str], details: Path, with_qc: bool, seed: int = 0) -> dict:
    registry = dataset.labels
    truth_file = read_checked(case.label, case.case_id, cfg.checks, is_label=True)
    truth = label_array(truth_file, registry.values, case.case_id)
    predicted_file = read_checked(_prediction_path(cfg, case), case.case_id, cfg.checks, is_label=True)
    prediction = label_array(predicted_file, registry.values, case.case_id)
    if prediction.shape != truth.shape:
        reason = f"shape {prediction.shape} differs from the ground truth {truth.shape}"
        raise InvalidInputError(predicted_file.path, reason, code="G1")
    if not same_grid(predicted_file, truth_file, cfg.checks):
        reason = "affine differs from the ground truth's: the mask does not lie on its scan"
        raise InvalidInputError(predicted_file.path, reason, code="G3")
    spacing, tolerance = tuple(truth_file.geometry.spacing), cfg.evaluate.surface_tolerance_mm
    metrics = case_metrics(prediction, truth, spacing, labels, tolerance)
    row = {"case": case.case_id, "metrics": metrics, "mean_dice": float(np.mean([m["dice"] for m in metrics.values()]))}
    if dataset.regions:
        row["regions"] = region_metrics(prediction, truth, spacing, dataset.regions, tolerance)
    entropy_map = read_uncertainty_maps(cfg.infer.out_dir, case.case_id, predicted_file, cfg.checks).get("entropy")
    if entropy_map is not None:
        row["uncertainty"] = organ_uncertainty(entropy_map, prediction, labels)
        row["risk"] = float(np.mean([u["entropy_boundary"] for u in row["uncertainty"].values()]))
    row["calibration"] = _calibration_sample(cfg, case, prediction, truth, truth_file.geometry.spacing, seed)
    if with_qc:
        loaded = read_checked(case.images[0], case.case_id, cfg.checks)
        image = channel_volumes(loaded, case.packed_channels, case.case_id)[0]  # the first channel is shown
        window = display_window(image, dataset.is_ct)
        row["image"] = f"{case.case_id}.png"
        save_case_qc(details / "qc" / row["image"], image, truth_file.affine, prediction, truth, registry, case.case_id, window)
        if entropy_map is not None:
            row["uncertainty_image"] = f"{case.case_id}_uncertainty.png"
            save_uncertainty_overlay(details / "qc" / row["uncertainty_image"], image, truth_file.affine, prediction,
                                     entropy_map, registry, case.case_id, window)  # fmt: skip
    return row


def _calibration_sample(cfg, case: Case, prediction, truth, spacing, seed: int):
    """Up to ``SAMPLES_PER_CASE`` voxels of the foreground and its neighbourhood: ((C, n) probabilities, (n,) labels,
    temperature) from the probabilities ``infer`` saved, or ``None``."""
    saved = load_probability_box(cfg.infer.out_dir, case.case_id)
    if saved is None:
        return None
    probabilities, box, temperature = saved
    chosen = sample_voxels(neighbourhood(truth, prediction, spacing)[box], SAMPLES_PER_CASE, seed)
    flat = probabilities.reshape(probabilities.shape[0], -1)[:, chosen].astype(np.float32)
    flat /= flat.sum(axis=0, keepdims=True)  # float16 storage: renormalise
    return flat, truth[box].reshape(-1)[chosen].astype(np.int64), temperature


def trust_metrics(rows: list[dict], details: Path) -> dict[str, float]:
    """Calibration before/after the temperature and the uncertainty's rank correlation with Dice (where available)."""
    out = {}
    samples = [r["calibration"] for r in rows if r.get("calibration") is not None]
    if samples:
        probabilities = np.concatenate([p for p, _, _ in samples], axis=1)
        truth = np.concatenate([t for _, t, _ in samples])
        temperature = samples[0][2]
        out.update({k: round(v, 6) for k, v in calibration_scores(probabilities, truth, temperature).items()})
        scaled = apply_temperature(probabilities, temperature)
        save_reliability_diagram(details / "reliability.png", probabilities.max(0), probabilities.argmax(0) == truth,
                                 scaled.max(0), scaled.argmax(0) == truth, ECE_BINS)  # fmt: skip
    pairs = [(u["entropy_boundary"], r["metrics"][organ]["dice"]) for r in rows for organ, u in r.get("uncertainty", {}).items()]
    if len(pairs) > 2 and len({e for e, _ in pairs}) > 1 and len({d for _, d in pairs}) > 1:
        from scipy.stats import spearmanr

        out["uncertainty_spearman_dice"] = round(float(spearmanr(*zip(*pairs)).statistic), 4)
        out["uncertainty_pairs"] = len(pairs)
    return out


def aggregate_metrics(rows: list[dict], labels: dict[int, str]) -> dict[str, float]:
    """Mean of each metric per organ (``<metric>_<organ>``) and over organs (``<metric>_mean``) across cases; for a
    region-based dataset also per region (``<metric>_region <name>``) and over regions (``<metric>_regions_mean``)."""
    aggregate = {}
    regions = list(rows[0].get("regions", {})) if rows else []
    for metric in METRIC_NAMES:
        per_organ = {name: float(np.mean([r["metrics"][name][metric] for r in rows])) for name in labels.values()}
        aggregate.update({f"{metric}_{name}": value for name, value in per_organ.items()})
        aggregate[f"{metric}_mean"] = float(np.mean(list(per_organ.values())))
        per_region = {name: float(np.mean([r["regions"][name][metric] for r in rows])) for name in regions}
        aggregate.update({f"{metric}_{name}": value for name, value in per_region.items()})
        if per_region:
            aggregate[f"{metric}_regions_mean"] = float(np.mean(list(per_region.values())))
    aggregate["cases"] = len(rows)
    return aggregate


def _write_outputs(cfg: PipelineConfig, rows: list[dict], aggregate: dict, details: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "organ", *METRIC_NAMES, *UNCERTAINTY_COLUMNS])
    for row in rows:
        for organ, values in {**row["metrics"], **row.get("regions", {})}.items():
            trust = row.get("uncertainty", {}).get(organ, {})
            columns = [f"{trust[c]:.6f}" if c in trust else "" for c in UNCERTAINTY_COLUMNS]
            writer.writerow([row["case"], organ, *(f"{values[m]:.6f}" for m in METRIC_NAMES), *columns])
    with atomic_path(details / "cases.csv") as tmp:
        tmp.write_text(buffer.getvalue())
    if any(r.get("image") for r in rows):
        write_html_report(details / "qc" / "index.html", rows, METRIC_NAMES, "segpipe evaluation: test cases")
    write_json_atomic(Path(cfg.evaluate.reports_dir) / "metrics.json", aggregate)


def _track(cfg: PipelineConfig, stage: str, cases: list[Case], aggregate: dict, details: Path) -> None:
    digests = {c.case_id: [file_digest(_prediction_path(cfg, c)), file_digest(c.label)] for c in cases}
    tracker = RunTracker(cfg.tracking)
    params = {
        "evaluate.surface_tolerance_mm": str(cfg.evaluate.surface_tolerance_mm),
        "infer.models": ",".join(map(str, cfg.infer.models)),
    }
    tracker.start("evaluate", params, run_tags(stage, text_digest(json.dumps(digests, sort_keys=True))))
    try:
        tracker.log_metrics({k: v for k, v in aggregate.items() if k != "cases"}, step=0)
        tracker.log_artifact(details / "cases.csv")
        if (details / "reliability.png").is_file():
            tracker.log_artifact(details / "reliability.png", "figures")
        for path in sorted((details / "qc").glob("*")):
            tracker.log_artifact(path, "qc")
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
