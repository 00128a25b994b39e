"""``dvc repro`` on a temporary copy of the project runs synth -> verify -> preprocess, and a second run re-runs nothing."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def _run(cmd, cwd):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_dvc_repro_runs_the_stages_then_is_up_to_date(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pipeline", "configs"):
        shutil.copytree(REPO_ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "dvc.yaml", project / "dvc.yaml")
    params_path = project / "configs" / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["synth"].update(
        n_labeled=3, n_test=1, n_unlabeled=1, matrix=64, inplane_spacing_mm=[5.2, 5.6], slice_spacing_mm=[8.0, 10.0]
    )
    params["preprocess"]["spacing_mm"] = [8.0, 8.0, 10.0]
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], project)
    _run(["dvc", "init", "-q"], project)
    _run(["dvc", "config", "core.analytics", "false"], project)

    first = _run(["dvc", "repro"], project)
    for stage in ("synth", "verify", "preprocess"):
        assert f"Running stage '{stage}'" in first
    manifest = json.loads((project / "data" / "preprocessed" / "dataset.json").read_text())
    assert len(manifest["cases"]) == 5
    assert json.loads((project / "reports" / "verify.json").read_text())["num_errors"] == 0
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"synth", "verify", "preprocess"}

    second = _run(["dvc", "repro"], project)
    assert "Running stage" not in second
    assert "up to date" in second
