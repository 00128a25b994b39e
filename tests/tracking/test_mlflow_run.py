"""MLflow set-up: explicit absolute store, tags, and a tracker that is a no-op when disabled."""

from __future__ import annotations

from pipeline.config import TrackingSettings
from pipeline.tracking.mlflow_run import RunTracker, cpu_model, git_commit, run_tags, source_commit, tracking_uri


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


def test_tags_name_the_cpu_its_instruction_set_and_the_thread_count(tmp_path):
    import torch

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\nflags\t: avx2\n")
    assert cpu_model(cpuinfo) == "AMD EPYC 9R14"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tags = run_tags("train_unet2d@0", "abc123")
    finally:
        torch.set_num_threads(threads)  # the rest of the suite runs with the process's own count
    assert tags["segpipe_torch_threads"] == "1" and tags["segpipe_torch_version"] == torch.__version__
    assert tags["segpipe_cpu_capability"] in {"DEFAULT", "AVX2", "AVX512", "NO AVX", "ZVECTOR", "VSX", "SVE256"}


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


def test_source_commit_stays_at_the_last_code_change_while_head_moves(tmp_path, monkeypatch):
    """Model cards record source_commit: committing dvc.lock and metrics after a run must not change it."""
    import subprocess

    def git(*args) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "a.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code")
    code = git("rev-parse", "HEAD")
    monkeypatch.chdir(tmp_path)
    assert source_commit() == git_commit() == code
    (tmp_path / "dvc.lock").write_text("stages: {}\n")
    git("add", "dvc.lock")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results")
    assert git_commit() == git("rev-parse", "HEAD") != code
    assert source_commit() == code
    (tmp_path / "pipeline" / "a.py").write_text("x = 2\n")
    assert source_commit() == code + "+dirty"


def test_a_training_killed_by_sigkill_is_closed_as_killed_on_the_next_start(tiny_preprocessed, tmp_path):
    """P1: SIGKILL leaves the run RUNNING; the next run of the same stage marks it KILLED (a live one is left alone)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from mlflow import MlflowClient

    from pipeline.training.engine import train_model
    from tests.conftest import REPO_ROOT, tiny_train_config

    script = (
        "import sys; from pathlib import Path; from tests.conftest import tiny_train_config; "
        "from pipeline.training.engine import train_model; "
        "cfg = tiny_train_config(Path(sys.argv[1]), Path(sys.argv[2]), tracking={'enabled': True}, "
        "train={'max_epochs': 10000}); train_model(cfg)"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(tiny_preprocessed), str(tmp_path)], cwd=REPO_ROOT)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    deadline, running = time.monotonic() + 120, []
    while not running and time.monotonic() < deadline:
        time.sleep(1.0)
        if (tmp_path / "mlflow.db").exists() and (experiments := client.search_experiments()):
            found = client.search_runs([e.experiment_id for e in experiments], "attributes.status = 'RUNNING'")
            running = [r for r in found if "segpipe_pid" in r.data.tags]
    assert running, "the child never started its MLflow run"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    (killed,) = running
    assert client.get_run(killed.info.run_id).info.status == "RUNNING"  # what SIGKILL leaves behind
    assert killed.data.tags["segpipe_pid"] == str(child.pid)

    tracking = {
        "enabled": True,
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "artifact_root": str(tmp_path / "mlartifacts"),
    }
    train_model(tiny_train_config(tiny_preprocessed, tmp_path / "again", tracking=tracking))
    after = client.get_run(killed.info.run_id)
    assert after.info.status == "KILLED"
    assert after.data.tags["segpipe_closed"] == f"process {child.pid} had gone; closed as KILLED"
    statuses = sorted(r.info.status for r in client.search_runs([killed.info.experiment_id]))
    assert statuses == ["FINISHED", "KILLED"]


def test_metric_names_from_label_names_mlflow_refuses_are_logged_with_underscores(tmp_path):
    """A dataset.json label such as "kidney (left)" used to raise MlflowException and fail the stage."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = RunTracker(TrackingSettings(tracking_uri=uri, artifact_root=tmp_path / "artifacts"))
    run_id = tracker.start("evaluate", {}, {})
    tracker.log_metrics({"dice_kidney (left)": 0.5, "dice_a+b/c": 0.25, "dice_nodule, solid": 0.125, "dice_ä: x": 1.0}, step=0)
    tracker.end()
    logged = MlflowClient(uri).get_run(run_id).data.metrics
    assert logged == {"dice_kidney _left_": 0.5, "dice_a_b_c": 0.25, "dice_nodule_ solid": 0.125, "dice_ä: x": 1.0}
