"""The served model (``pipeline/serving/model.py``): what it does per request, and how ``crossval`` logs it to MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import SegPipeError

SERVED_MODEL_CODE = Path(__file__).with_name("model.py")
SERVED_MODEL_NAME = "served_model"


def serve_scan(predictor, path: Path, output_dir: Path) -> dict:
    """Segment one scan (NIfTI file or DICOM series folder) as ``segpipe predict`` does; never raise for a bad scan.

    Returns:
        ``{"input", "mask", "gate_status", "gate_reasons", "error", "entropy_<organ>"...}``: ``mask`` is empty when the gate
        refuses the scan or it cannot be read (``error`` says why).
    """
    from pipeline.export.run import export_case
    from pipeline.inference.predict import segment_scan
    from pipeline.inference.run import uncertainty_maps
    from pipeline.inference.sources import discover_scans, read_scan

    row = {"input": str(path), "mask": "", "gate_status": "", "gate_reasons": "", "error": ""}
    try:
        (source,) = discover_scans(path, "anonymous")
        scan = read_scan(source, len(predictor.bundles[0].modalities))
        result = segment_scan(predictor, scan.image, scan.affine, source.path, source.name)
        files = export_case(Path(output_dir) / source.name, source.name, result.label, scan.affine, predictor.labels,
                            ("nifti",), maps=uncertainty_maps(result))  # fmt: skip
    except SegPipeError as exc:
        code = getattr(exc, "code", None)
        return {**row, "gate_status": "refuse" if code == "Q1" else "error", "error": str(exc)}
    except ValueError as exc:  # a folder holding several scans: the served model takes one per row
        return {**row, "gate_status": "error", "error": f"{path}: one scan per request row ({exc})"}
    labels = {lab.value: lab.name for lab in predictor.labels.foreground()}
    row.update(mask=str(files[0]), gate_status=result.gate.status, gate_reasons="; ".join(result.gate.reasons))
    row.update(organ_entropy(result.label, result.entropy, labels))
    return row


def organ_entropy(mask: np.ndarray, entropy: np.ndarray | None, labels: dict[int, str]) -> dict[str, float]:
    """Mean predictive entropy inside each predicted organ (absent organs are left out)."""
    if entropy is None:
        return {}
    return {f"entropy_{name}": float(entropy[mask == value].mean()) for value, name in labels.items() if (mask == value).any()}


def log_served_model(tracker, decisions_path: Path, model_folders: tuple[Path, ...]) -> None:
    """Log the pyfunc (models from code: nothing pickled) with the chosen model folders and decisions as artifacts."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    artifacts = {"decisions": str(decisions_path), **{f"model_{i}": str(f) for i, f in enumerate(model_folders)}}
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "path")]), params=ParamSchema([ParamSpec("output_dir", "string", "")])
    )
    tracker.log_pyfunc(SERVED_MODEL_NAME, SERVED_MODEL_CODE, artifacts, signature)
