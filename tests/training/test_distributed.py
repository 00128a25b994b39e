"""The same engine under torchrun: 2 CPU processes with gloo, DDP, rank-0-only outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from pipeline.training.checkpoint import load_checkpoint
from tests.conftest import REPO_ROOT, tiny_train_config


@pytest.mark.slow
def test_two_cpu_processes_train_with_ddp_and_rank0_writes_once(tiny_preprocessed, tmp_path):
    cfg = tiny_train_config(tiny_preprocessed, tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "pipeline",
        "train",
        "-c",
        str(config),
        "--stage",
        "ddp_test",
    ]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained unet2d") == 1  # only rank 0 reports and writes

    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert checkpoint["fingerprint"]["world_size"] == "2" and checkpoint["epoch"] == 2
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    history = json.loads((tmp_path / "reports" / "details" / "history.json").read_text())
    assert metrics["val_dice_mean"] == max(h["val_dice_mean"] for h in history if "val_dice_mean" in h)

    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("segpipe").experiment_id])
    assert len(runs) == 1 and runs[0].data.params["world_size"] == "2"
    # each rank draws its own share of the epoch: the global count is world_size x batch_size x steps
    history = json.loads((tmp_path / "reports" / "details" / "history.json").read_text())
    assert [h["samples"] for h in history] == [2 * 4 * 2, 2 * 4 * 2]
