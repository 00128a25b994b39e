"""The served model: an MLflow pyfunc whose input is a scan path and whose output is the mask path with its trust summary.

The pyfunc's artifacts are the model folders cross-validation chose (``model.pt``, ``model_card.json``, ``model.onnx``)
and ``decisions.json`` (which models, temperature, postprocessing). It runs the same code as ``segpipe predict``: input
gate, ensemble, calibrated uncertainty, export. One request row is one scan: a NIfTI file or a DICOM series folder that
the serving machine can read. The response row holds the mask's path, the gate's verdict and reasons, and each organ's
mean predictive entropy inside its mask.

This file is logged as MLflow "models from code" (:func:`mlflow.models.set_model` at the bottom), so nothing is pickled.
Serve it with ``mlflow models serve -m <uri> --env-manager local`` (it binds to 127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

OUTPUT_DIR_PARAM = "output_dir"


class SegpipeServedModel(mlflow.pyfunc.PythonModel):
    """Scan path in; mask path, gate verdict and uncertainty summary out."""

    def load_context(self, context) -> None:
        from pipeline.config import InferSettings
        from pipeline.crossval.decisions import Decisions
        from pipeline.inference.predict import load_predictor

        artifacts = context.artifacts
        decisions = Decisions.model_validate(json.loads(Path(artifacts["decisions"]).read_text()))
        folders = tuple(Path(artifacts[f"model_{i}"]) for i in range(len(decisions.models)))
        local = decisions.model_copy(update={"models": folders})
        self.decisions_path = Path(tempfile.mkdtemp(prefix="segpipe-served-")) / "decisions.json"
        self.decisions_path.write_text(local.model_dump_json())
        self.settings = InferSettings(models="auto", device="cpu")
        self.predictor = load_predictor(self.settings, self.decisions_path)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Segment every ``path`` of ``model_input`` into ``params["output_dir"]`` (default: a new temporary folder)."""
        from pipeline.serving import serve_scan

        output_dir = Path((params or {}).get(OUTPUT_DIR_PARAM) or tempfile.mkdtemp(prefix="segpipe-masks-"))
        rows = [serve_scan(self.predictor, Path(path), output_dir) for path in model_input["path"]]
        return pd.DataFrame(rows)


mlflow.models.set_model(SegpipeServedModel())
