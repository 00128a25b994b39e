"""``base.torch_threads``: a machine's core count does not change what a stage computes."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
import yaml

from tests.conftest import tiny_train_config


def _train_in_a_fresh_process(preprocessed, work, torch_threads: int, one_core: bool) -> dict:
    """``segpipe train`` in a fresh process; ``one_core``: PyTorch's default is 1 thread, as on a 1-core machine."""
    cfg = tiny_train_config(preprocessed, work, "vnet3d", base={"torch_threads": torch_threads}, tracking={"enabled": False})
    config = work / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | ({"OMP_NUM_THREADS": "1"} if one_core else {})
    command = [sys.executable, "-m", "pipeline.cli", "train", "-c", str(config)]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, encoding="utf-8", check=False)
    assert result.returncode == 0, result.stderr
    return torch.load(work / "model" / "model.pt", weights_only=True)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_1_core_machine_trains_the_weights_of_this_one_and_other_weights_without_the_pin(tiny_preprocessed, tmp_path):
    one_core = _train_in_a_fresh_process(tiny_preprocessed, tmp_path / "a", torch_threads=2, one_core=True)
    here = _train_in_a_fresh_process(tiny_preprocessed, tmp_path / "b", torch_threads=2, one_core=False)
    assert _equal(one_core, here)
    unpinned = _train_in_a_fresh_process(tiny_preprocessed, tmp_path / "c", torch_threads=0, one_core=True)
    assert not _equal(one_core, unpinned)  # what the pin prevents: 1 thread sums in another order than 2
