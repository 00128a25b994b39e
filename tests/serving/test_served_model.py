"""The served model: ``mlflow models serve`` on 127.0.0.1 takes a scan path and returns a mask lying on that scan."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np

from pipeline.config import TrackingSettings
from pipeline.crossval.decisions import Decisions
from pipeline.inference.postprocess import PostprocessingDecision
from pipeline.serving import SERVED_MODEL_NAME, log_served_model
from pipeline.tracking.mlflow_run import RunTracker
from tests.inference.oracle import oblique_lps_affine, oracle_scan, write_tiny_model


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_mlflow_models_serve_segments_a_posted_scan_path_onto_its_own_grid(tmp_path):
    model = write_tiny_model(tmp_path / "model")
    decisions = Decisions(configurations=("unet2d",), models=(model,), postprocessing=PostprocessingDecision(False, ()).to_json(),
                          folds=(0,), cases=1, scores={}, temperature=0.8)  # fmt: skip
    (tmp_path / "decisions.json").write_text(decisions.model_dump_json())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = RunTracker(TrackingSettings(tracking_uri=uri, artifact_root=tmp_path / "artifacts"))
    run_id = tracker.start("serve-test", {}, {"dvc_stage": "crossval"})
    log_served_model(tracker, tmp_path / "decisions.json", (model,))
    tracker.end()

    image, _ = oracle_scan()
    scan = tmp_path / "in" / "scan.nii.gz"
    scan.parent.mkdir()
    nib.save(nib.Nifti1Image(image.astype(np.int16), oblique_lps_affine()), scan)
    port = _free_port()
    # mlflow runs `uvicorn` from PATH: this interpreter's environment first, whether or not it is activated
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": path}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"runs:/{run_id}/{SERVED_MODEL_NAME}",
               "-h", "127.0.0.1", "-p", str(port), "--env-manager", "local"]  # fmt: skip
    server = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode().replace("\r", "\n")[-3000:]  # progress bars end in \r
                assert time.monotonic() < deadline, "the server did not answer /ping"
                time.sleep(1.0)
        body = {"dataframe_split": {"columns": ["path"], "data": [[str(scan)], [str(tmp_path / "absent.nii.gz")]]},
                "params": {"output_dir": str(tmp_path / "out")}}  # fmt: skip
        served, missing = _post(f"http://127.0.0.1:{port}/invocations", body)["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    mask = nib.load(served["mask"])
    assert mask.shape == image.shape and np.allclose(mask.affine, oblique_lps_affine(), atol=1e-5)
    assert served["gate_status"] == "pass" and served["error"] == ""
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}
    entropy = nib.load(served["mask"].replace("_seg.nii.gz", "_entropy.nii.gz"))
    assert entropy.shape == image.shape and all(0 <= served[k] <= np.log(3) for k in served if k.startswith("entropy_"))
    assert missing["mask"] == "" and missing["gate_status"] == "error" and "absent.nii.gz" in missing["error"]
