"""The ``infer`` stage (the dataset's test scans) and ``segpipe predict`` (any NIfTI file, folder or DICOM series).

Both run the same path: read the scan with ingestion's checks, :func:`predict_scan`, write the mask
on the scan's grid under a temporary name. Every failing scan is reported together at the end;
existing outputs are refused unless ``overwrite`` (row T7).
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from tqdm import tqdm

from pipeline.config import CheckSettings, ExportFormat, InferSettings, PipelineConfig
from pipeline.data.header import DEFAULT_CHECKS
from pipeline.data.layout import load_dataset
from pipeline.data.nifti import write_nifti
from pipeline.errors import DatasetError, Problem
from pipeline.export.run import export_case, write_label_tables
from pipeline.inference.predict import Predictor, load_predictor, predict_scan
from pipeline.inference.sources import Naming, discover_scans, read_scan
from pipeline.io_utils import refuse_existing, write_json_atomic
from pipeline.parallel import run_guarded
from pipeline.preprocess.reading import read_case


def infer_dataset(cfg: PipelineConfig, overwrite: bool = False) -> Path:
    """Predict every test scan of ``cfg.data.root`` into ``<infer.out_dir>/<case_id>.nii.gz``.

    Returns:
        Path of ``<out_dir>/inference.json`` (models, settings, seconds per case).

    Raises:
        DatasetError: existing outputs (T7) or scans that failed, all listed.
        InvalidInputError: a model folder cannot be loaded.
    """
    dataset = load_dataset(cfg.data.root)
    out_dir = Path(cfg.infer.out_dir)
    cases = dataset.split("test")
    refuse_existing([out_dir / f"{c.case_id}.nii.gz" for c in cases], overwrite)
    predictor = load_predictor(cfg.infer, cfg.crossval.decisions)
    seconds, problems = {}, []
    for case in tqdm(cases, desc="infer", unit="case", disable=None):
        start = time.perf_counter()
        outcome = run_guarded(case.case_id, case.images[0], partial(_infer_case, predictor, case, out_dir, cfg.checks))
        if isinstance(outcome, Problem):
            problems.append(outcome)
            continue
        seconds[case.case_id] = round(time.perf_counter() - start, 3)
    if problems:
        raise DatasetError(problems, f"inference failed for {len({p.case for p in problems})} of {len(cases)} case(s)")
    summary = out_dir / "inference.json"
    write_json_atomic(summary, {**_describe(predictor), "seconds_per_case": seconds})
    return summary


def _infer_case(predictor: Predictor, case, out_dir: Path, checks) -> None:
    image, affine, _ = read_case(replace(case, label=None), set(), checks)  # inference never reads ground truth
    label = predict_scan(predictor, image, affine)
    write_nifti(out_dir / f"{case.case_id}.nii.gz", label, affine, label.dtype)


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
    written, problems = {}, []
    for source in tqdm(sources, desc="predict", unit="scan", disable=None):

        def segment(source=source) -> list[Path]:
            scan = read_scan(source, channels, series_uid, checks)
            label = predict_scan(predictor, scan.image, scan.affine)
            folder = output_dir / source.name
            return export_case(folder, source.name, label, scan.affine, predictor.labels, formats, scan.dicom, model_names)

        outcome = run_guarded(source.name, source.path, segment)
        if isinstance(outcome, Problem):
            problems.append(outcome)
            continue
        written[str(source.path)] = outcome
    if problems:
        raise DatasetError(problems, f"prediction failed for {len(problems)} of {len(sources)} scan(s)")
    write_label_tables(output_dir, predictor.labels, formats)
    return written
