"""The ``evaluate`` stage: metrics of the predicted test masks in each scan's original geometry, QC report, MLflow run.

Outputs under ``evaluate.reports_dir``: ``metrics.json`` (DVC metrics, ``cache: false``: mean of
each metric per organ and over organs), and ``details/`` with ``cases.csv`` (one row per case and
organ), ``qc/<case>.png`` overlays and ``qc/index.html``. Predictions must lie exactly on their
scan (shape and affine); a case that does not is reported with every other problem.
"""

from __future__ import annotations

import csv
import io
import json
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.config import PipelineConfig
from pipeline.data.header import read_checked
from pipeline.data.labels import LabelRegistry
from pipeline.data.layout import Case, load_dataset
from pipeline.data.nifti import label_array, squeeze_to_3d
from pipeline.errors import DatasetError, InvalidInputError, Problem
from pipeline.evaluation.metrics import METRIC_NAMES, case_metrics
from pipeline.evaluation.qc import save_case_qc, write_html_report
from pipeline.io_utils import atomic_path, file_digest, text_digest, write_json_atomic
from pipeline.parallel import run_guarded
from pipeline.preprocess.reading import same_grid
from pipeline.tracking.mlflow_run import RunTracker, run_tags


def evaluate_dataset(cfg: PipelineConfig, stage: str = "evaluate") -> dict[str, float]:
    """Score every test case that has ground truth (``labelsTs``) against ``<infer.out_dir>/<case>.nii.gz``.

    Returns:
        The aggregate metrics written to ``metrics.json``.

    Raises:
        DatasetError: no test case with ground truth, or missing/unreadable/misaligned predictions (all listed).
    """
    dataset = load_dataset(cfg.data.root)
    cases = [c for c in dataset.split("test") if c.label is not None]
    if not cases:
        raise DatasetError([Problem(str(cfg.data.root), "F6", "error", "no test case with ground truth (labelsTs/)")])
    labels = {lab.value: lab.name for lab in dataset.labels.foreground()}
    details = Path(cfg.evaluate.reports_dir) / "details"
    rows, problems = [], []
    for index, case in enumerate(cases):
        score = partial(_score_case, cfg, case, dataset.labels, labels, details, with_qc=_wants_qc(cfg, index))
        outcome = run_guarded(case.case_id, _prediction_path(cfg, case), score)
        (problems if isinstance(outcome, Problem) else rows).append(outcome)
    if problems:
        raise DatasetError(problems, f"evaluation failed for {len({p.case for p in problems})} of {len(cases)} case(s)")
    aggregate = aggregate_metrics(rows, labels)
    _write_outputs(cfg, rows, aggregate, details)
    _track(cfg, stage, cases, aggregate, details)
    return aggregate


def _wants_qc(cfg: PipelineConfig, index: int) -> bool:
    return cfg.evaluate.qc_cases is None or index < cfg.evaluate.qc_cases


def _prediction_path(cfg: PipelineConfig, case: Case) -> Path:
    return Path(cfg.infer.out_dir) / f"{case.case_id}.nii.gz"


def _score_case(cfg, case: Case, registry: LabelRegistry, labels: dict[int, str], details: Path, with_qc: bool) -> dict:
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
    metrics = case_metrics(prediction, truth, tuple(truth_file.geometry.spacing), labels, cfg.evaluate.surface_tolerance_mm)
    row = {"case": case.case_id, "metrics": metrics, "mean_dice": float(np.mean([m["dice"] for m in metrics.values()]))}
    if with_qc:
        image = squeeze_to_3d(read_checked(case.images[0], case.case_id, cfg.checks), case.case_id)
        row["image"] = f"{case.case_id}.png"
        save_case_qc(details / "qc" / row["image"], image, truth_file.affine, prediction, truth, registry, case.case_id)
    return row


def aggregate_metrics(rows: list[dict], labels: dict[int, str]) -> dict[str, float]:
    """Mean of each metric per organ (``<metric>_<organ>``) and over organs (``<metric>_mean``) across cases."""
    aggregate = {}
    for metric in METRIC_NAMES:
        per_organ = {name: float(np.mean([r["metrics"][name][metric] for r in rows])) for name in labels.values()}
        aggregate.update({f"{metric}_{name}": value for name, value in per_organ.items()})
        aggregate[f"{metric}_mean"] = float(np.mean(list(per_organ.values())))
    aggregate["cases"] = len(rows)
    return aggregate


def _write_outputs(cfg: PipelineConfig, rows: list[dict], aggregate: dict, details: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "organ", *METRIC_NAMES])
    for row in rows:
        for organ, values in row["metrics"].items():
            writer.writerow([row["case"], organ, *(f"{values[m]:.6f}" for m in METRIC_NAMES)])
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
        for path in sorted((details / "qc").glob("*")):
            tracker.log_artifact(path, "qc")
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
