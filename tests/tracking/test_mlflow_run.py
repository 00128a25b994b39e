"""MLflow set-up: explicit absolute store, tags, and a tracker that is a no-op when disabled."""

from __future__ import annotations

from pipeline.config import TrackingSettings
from pipeline.tracking.mlflow_run import RunTracker, git_commit, run_tags, tracking_uri


def test_default_store_is_an_absolute_sqlite_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = tracking_uri(TrackingSettings())
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}" and uri.startswith("sqlite:////")
    assert tracking_uri(TrackingSettings(tracking_uri="http://127.0.0.1:5000")) == "http://127.0.0.1:5000"


def test_tags_carry_commit_stage_experiment_and_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-fern")
    tags = run_tags("train_vnet3d", "abc123")
    assert tags["dvc_stage"] == "train_vnet3d" and tags["dvc_exp_name"] == "bushy-fern" and tags["data_fingerprint"] == "abc123"
    monkeypatch.chdir(tmp_path)  # not a git repository
    assert git_commit() == "unknown"


def test_disabled_tracker_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = RunTracker(TrackingSettings(enabled=False))
    assert tracker.start("run", {"a": "1"}, {}) is None
    tracker.log_metrics({"x": 1.0}, step=1)
    tracker.end()
    assert list(tmp_path.iterdir()) == []


def test_commit_is_dirty_only_when_code_or_configs_changed(tmp_path, monkeypatch):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "a.py").write_text("x = 1\n")
    (tmp_path / "metrics.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics.json").unlink()  # what DVC does to a metrics output before its stage runs
    clean = git_commit()
    assert len(clean) == 40 and not clean.endswith("+dirty")
    (tmp_path / "pipeline" / "a.py").write_text("x = 2\n")
    assert git_commit() == clean + "+dirty"
