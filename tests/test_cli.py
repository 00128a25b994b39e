"""The CLI: stages via ``segpipe`` and ``python -m pipeline``, config errors exit 2, data errors exit 1."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from pipeline.cli import app
from tests.conftest import tiny_synth_settings

runner = CliRunner()


def _tiny_synth_overrides(out, **counts: int) -> list[str]:
    """``segpipe synth`` overrides for a tiny phantom of ``counts`` (n_labeled, n_test, n_unlabeled) cases in ``out``."""
    s = tiny_synth_settings(out, **counts)
    return [
        f"synth.out_dir={out}",
        *(f"synth.{key}={value}" for key, value in counts.items()),
        "synth.matrix=64",
        f"synth.inplane_spacing_mm={list(s.inplane_spacing_mm)}",
        f"synth.slice_spacing_mm={list(s.slice_spacing_mm)}",
    ]


def test_synth_verify_preprocess_through_the_cli(tmp_path):
    out = tmp_path / "ph"
    overrides = _tiny_synth_overrides(out, n_labeled=2, n_test=1, n_unlabeled=1)
    assert runner.invoke(app, ["synth", *overrides]).exit_code == 0
    result = runner.invoke(app, ["verify", str(out), f"verify.report={tmp_path / 'v.json'}", "base.num_workers=0"])
    assert result.exit_code == 0, result.output
    pre, plans = tmp_path / "pre", tmp_path / "plan" / "plans.json"
    common = [f"data.root={out}", f"plan.file={plans}", f"preprocess.out_dir={pre}", "base.num_workers=0"]
    common.append(f"crossval.split_file={tmp_path / 'plan' / 'splits.json'}")
    result = runner.invoke(app, ["plan", *common, "preprocess.spacing_mm=[8,8,10]"])
    assert result.exit_code == 0, result.output
    assert "overrides: {'preprocess.spacing_mm': '[8.0, 8.0, 10.0]'}" in result.output and "3d_fullres" in result.output
    result = runner.invoke(app, ["preprocess", *common])
    assert result.exit_code == 0, result.output
    assert len(json.loads((pre / "fullres" / "dataset.json").read_text())["cases"]) == 4
    assert json.loads((pre / "fullres" / "dataset.json").read_text())["target_spacing"] == [8.0, 8.0, 10.0]


TORCH_FREE_STAGES = """
import sys
from typer.testing import CliRunner
from pipeline.cli import app
out, report, *synth = sys.argv[1:]
runner = CliRunner()
codes = [runner.invoke(app, ["synth", *synth]).exit_code,
         runner.invoke(app, ["verify", out, f"verify.report={report}", "base.num_workers=0"]).exit_code]
print(codes, "torch" in sys.modules)
"""


def test_synth_and_verify_do_not_import_torch(tmp_path):
    """Stages that compute nothing with torch skip importing it (and pinning its threads)."""
    out = tmp_path / "ph"
    synth = _tiny_synth_overrides(out, n_labeled=1, n_test=0, n_unlabeled=0)
    result = subprocess.run(
        [sys.executable, "-c", TORCH_FREE_STAGES, str(out), str(tmp_path / "v.json"), *synth],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split("\n")[-2] == "[0, 0] False", result.stdout + result.stderr


def test_unknown_override_key_exits_2_with_key_named():
    result = runner.invoke(app, ["preprocess", "preprocess.no_such_key=1"])
    assert result.exit_code == 2
    assert "unknown key 'preprocess.no_such_key'" in result.output


def test_missing_dataset_exits_1_naming_the_folder(tmp_path):
    result = runner.invoke(app, ["plan", f"data.root={tmp_path / 'nowhere'}", f"plan.file={tmp_path / 'plans.json'}"])
    assert result.exit_code == 1
    assert str(tmp_path / "nowhere") in result.output


def test_python_dash_m_entry_point_lists_stages():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    assert result.returncode == 0
    for stage in ("synth", "verify", "plan", "preprocess"):
        assert stage in result.stdout


def test_train_without_a_plan_or_preprocessed_data_exits_1_naming_the_file(tmp_path):
    args = ["train", "-c", "configs/unet2d.yaml", f"preprocess.out_dir={tmp_path}", "tracking.enabled=false"]
    result = runner.invoke(app, [*args, f"plan.file={tmp_path / 'plans.json'}"])
    assert result.exit_code == 1
    assert f"{tmp_path / 'plans.json'}" in result.output and "segpipe plan" in result.output
    result = runner.invoke(app, [*args, "plan.configuration=null", "train.patch_size=[32,32]", "model.widths=[4,8]"])
    assert result.exit_code == 1
    assert f"{tmp_path / 'dataset.json'}" in result.output and "segpipe preprocess" in result.output


def test_train_with_a_patch_the_network_cannot_take_exits_2():
    result = runner.invoke(app, ["train", "-c", "configs/vnet3d.yaml", "train.patch_size=[60,64,64]"])
    assert result.exit_code == 2
    assert "train.patch_size [60, 64, 64] must be divisible by [16, 16, 16]" in result.output


def test_pretrain_and_train_refuse_each_others_models():
    refused = runner.invoke(app, ["pretrain", "-c", "configs/vnet3d.yaml"])
    assert refused.exit_code == 2 and "needs model.name=autoencoder, got 'vnet3d'" in refused.output
    refused = runner.invoke(app, ["train", "-c", "configs/pretrain_vnet3d.yaml"])
    assert refused.exit_code == 2 and "trained by `segpipe pretrain`" in refused.output
