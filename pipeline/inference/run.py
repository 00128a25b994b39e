"""The ``infer`` stage (the dataset's test scans) and ``segpipe predict`` (any NIfTI file, folder or DICOM series).

Both run the same path: read the scan with ingestion's checks, :func:`segment_scan` (input gate, masks,
uncertainty), write the mask and its uncertainty maps on the scan's grid under temporary names, and the
gate's verdict per scan to ``qa.json``. Every failing scan is reported together at the end;
existing outputs are refused unless ``overwrite`` (row T7).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import CheckSettings, ExportFormat, InferSettings, PipelineConfig
from pipeline.data.header import DEFAULT_CHECKS
from pipeline.data.layout import load_dataset
from pipeline.data.nifti import write_nifti
from pipeline.errors import DatasetError, Problem
from pipeline.export.run import export_case, write_label_tables
from pipeline.inference.predict import Predictor, ScanPrediction, load_predictor, segment_scan
from pipeline.inference.sources import Naming, discover_scans, read_scan
from pipeline.io_utils import refuse_existing, text_digest, write_json_atomic
from pipeline.parallel import run_guarded
from pipeline.preprocess.geometry import ras_spacing
from pipeline.preprocess.reading import read_case
from pipeline.qa.calibration import NEIGHBOURHOOD_MM
from pipeline.qa.outputs import save_probability_box, write_uncertainty_maps
from pipeline.tracking.mlflow_run import RunTracker, run_tags

logger = logging.getLogger(__name__)

QA_FILE = "qa.json"
BOX_MARGIN_MM = 5.0  # saved probabilities reach this far past evaluate's calibration neighbourhood


@dataclass(frozen=True)
class InferenceSummary:
    """What ``infer_dataset`` wrote (``inference.json``: models and settings) and how long each scan took. The seconds
    stay out of ``inference.json``: it lies in a DVC output, whose hash must depend on the predictions only."""

    path: Path
    seconds_per_case: dict[str, float]


def infer_dataset(cfg: PipelineConfig, overwrite: bool = False) -> InferenceSummary:
    """Predict every test scan of ``cfg.data.root`` into ``<infer.out_dir>/<case_id>.nii.gz``.

    Returns:
        The path of ``<out_dir>/inference.json`` (models, settings) and the seconds per case.

    Raises:
        DatasetError: existing outputs (T7) or scans that failed, all listed.
        InvalidInputError: a model folder cannot be loaded.
    """
    dataset = load_dataset(cfg.data.root)
    out_dir = Path(cfg.infer.out_dir)
    cases = dataset.split("test")
    refuse_existing([out_dir / f"{c.case_id}.nii.gz" for c in cases], overwrite)
    predictor = load_predictor(cfg.infer, cfg.crossval.decisions)
    seconds, problems, qa = {}, [], {}
    for case in tqdm(cases, desc="infer", unit="case", disable=None):
        start = time.perf_counter()
        outcome = run_guarded(case.case_id, case.images[0], partial(_infer_case, predictor, case, out_dir, cfg))
        qa[case.case_id] = outcome.gate.to_json() if not isinstance(outcome, Problem) else refused_qa(outcome)
        if isinstance(outcome, Problem):
            problems.append(outcome)
            continue
        seconds[case.case_id] = round(time.perf_counter() - start, 3)
    write_json_atomic(out_dir / QA_FILE, qa)
    track_gate(cfg, qa, out_dir / QA_FILE)
    if problems:
        raise DatasetError(problems, f"inference failed for {len({p.case for p in problems})} of {len(cases)} case(s)")
    summary = out_dir / "inference.json"
    write_json_atomic(summary, _describe(predictor))
    logger.info("seconds per case: %s", seconds)
    return InferenceSummary(summary, seconds)


def _infer_case(predictor: Predictor, case, out_dir: Path, cfg: PipelineConfig) -> ScanPrediction:
    """Segment one test scan; write its mask, uncertainty maps and the probabilities ``evaluate`` calibrates."""
    image, affine, _ = read_case(replace(case, label=None), set(), cfg.checks)  # inference never reads ground truth
    result = segment_scan(
        predictor, image, affine, case.images[0], case.case_id, cfg.infer.force, cfg.infer.uncertainty, probabilities=True
    )
    write_nifti(out_dir / f"{case.case_id}.nii.gz", result.label, affine, result.label.dtype)
    write_uncertainty_maps(out_dir, case.case_id, uncertainty_maps(result), affine)
    save_probability_box(out_dir, case.case_id, result.probabilities, result.label, ras_spacing(affine),
                         NEIGHBOURHOOD_MM + BOX_MARGIN_MM, predictor.temperature)  # fmt: skip
    return result


def uncertainty_maps(result: ScanPrediction) -> dict[str, np.ndarray]:
    """The float maps written beside a mask: ``entropy`` and ``mutual_information`` (when computed)."""
    maps = {"entropy": result.entropy, "mutual_information": result.mutual_information}
    return {name: values for name, values in maps.items() if values is not None}


def refused_qa(problem: Problem) -> dict:
    """``qa.json``'s entry for a scan that failed: the gate's refusal (row Q1) or another error."""
    status = "refuse" if problem.code == "Q1" else "error"
    return {"status": status, "forced": False, "reasons": [problem.message], "statistics": {}}


def track_gate(cfg: PipelineConfig, qa: dict, path: Path) -> None:
    """One MLflow run per ``infer``: how many scans the gate passed, warned about or refused, and ``qa.json``."""
    tracker = RunTracker(cfg.tracking)
    tracker.start("infer", {"infer.force": str(cfg.infer.force)}, run_tags("infer", text_digest(json.dumps(qa, sort_keys=True))))
    counts = {f"gate_{status}": sum(v["status"] == status for v in qa.values()) for status in ("pass", "warn", "refuse")}
    tracker.log_metrics({**counts, "gate_forced": sum(bool(v["forced"]) for v in qa.values())}, step=0)
    tracker.log_artifact(path)
    tracker.end()


def _describe(predictor: Predictor) -> dict:
    return {
        "models": [str(b.folder) for b in predictor.bundles],
        "settings": predictor.settings.model_dump(mode="json"),
        "device": str(predictor.device),
        "stitch_device": str(predictor.stitch_device),
    }


def predict_path(
    input_path: Path,
    output_dir: Path,
    settings: InferSettings,
    formats: tuple[ExportFormat, ...],
    naming: Naming = "anonymous",
    series_uid: str | None = None,
    overwrite: bool = False,
    decisions: Path | None = None,
    checks: CheckSettings = DEFAULT_CHECKS,
) -> dict[str, list[Path]]:
    """Segment a NIfTI file, a folder of NIfTI files, or a DICOM series folder, and export for the viewers.

    Writes ``<output_dir>/<name>/...`` per scan (see :func:`pipeline.export.run.export_case`) plus
    the label tables in ``output_dir``. Nothing in the outputs is derived from the input file names
    when ``naming`` is ``anonymous``.

    Returns:
        ``{source path: written files}``.

    Raises:
        DatasetError: existing outputs (T7) or scans that failed, all listed.
        InvalidInputError: no input, or a model folder cannot be loaded.
    """
    sources = discover_scans(input_path, naming, series_uid)
    output_dir = Path(output_dir)
    refuse_existing([output_dir / s.name for s in sources], overwrite)
    predictor = load_predictor(settings, decisions)
    channels = len(predictor.bundles[0].modalities)
    model_names = tuple(Path(b.folder).name for b in predictor.bundles)
    written, problems, qa = {}, [], {}
    for source in tqdm(sources, desc="predict", unit="scan", disable=None):

        def segment(source=source) -> tuple[list[Path], ScanPrediction]:
            scan = read_scan(source, channels, series_uid, checks)
            result = segment_scan(predictor, scan.image, scan.affine, source.path, source.name, settings.force,
                                  settings.uncertainty)  # fmt: skip
            folder = output_dir / source.name
            files = export_case(folder, source.name, result.label, scan.affine, predictor.labels, formats, scan.dicom,
                                model_names, uncertainty_maps(result))  # fmt: skip
            return files, result

        outcome = run_guarded(source.name, source.path, segment)
        qa[source.name] = refused_qa(outcome) if isinstance(outcome, Problem) else outcome[1].gate.to_json()
        if isinstance(outcome, Problem):
            problems.append(outcome)
            continue
        written[str(source.path)] = outcome[0]
        if outcome[1].gate.status != "pass":
            logger.warning("%s: input gate %s%s: %s", source.path, outcome[1].gate.status,
                           " (forced)" if outcome[1].gate.forced else "", "; ".join(outcome[1].gate.reasons))  # fmt: skip
    write_json_atomic(output_dir / QA_FILE, qa)
    if problems:
        raise DatasetError(problems, f"prediction failed for {len(problems)} of {len(sources)} scan(s)")
    write_label_tables(output_dir, predictor.labels, formats)
    return written
