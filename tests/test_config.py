"""YAML + overrides -> validated config; unknown or mistyped keys name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config, parse_override
from pipeline.errors import ConfigError
from tests.conftest import REPO_ROOT


def test_repository_params_file_validates_and_matches_defaults():
    cfg = load_config([REPO_ROOT / "configs" / "params.yaml"])
    assert cfg.preprocess.spacing_mm is None and cfg.plan.profile == "cpu"  # the plan decides the spacing
    assert cfg.synth.n_labeled == 12 and cfg.data.root == Path("data/phantom")
    gpu = load_config([REPO_ROOT / "configs" / "params.yaml", REPO_ROOT / "configs" / "gpu.yaml"])
    assert gpu.plan.profile == "gpu24" and gpu.preprocess.spacing_mm is None and gpu.synth.n_labeled == 12


def test_overrides_parse_yaml_values_and_win_last(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preprocess:\n  spacing_mm: [2, 2, 2]\n")
    cfg = load_config([path], ["preprocess.spacing_mm=[1.5,1.5,2.0]", "data.root=/data/Task09_Spleen"])
    assert cfg.preprocess.spacing_mm == (1.5, 1.5, 2.0)
    assert cfg.data.root == Path("/data/Task09_Spleen")
    assert load_config([path], ["preprocess.spacing_mm=null"]).preprocess.spacing_mm is None
    assert parse_override("a.b=true") == (["a", "b"], True)


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preprocess:\n  spacing: [2, 2, 2]\n")
    with pytest.raises(ConfigError) as err:
        load_config([path])
    assert f"{path}: unknown key 'preprocess.spacing'" in str(err.value)


def test_bad_value_from_override_names_the_override():
    with pytest.raises(ConfigError) as err:
        load_config([], ["synth.n_labeled=many"])
    assert "override 'synth.n_labeled=many'" in str(err.value) and "synth.n_labeled" in str(err.value)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "a: [unclosed\n"])
def test_malformed_files_are_clear_errors(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    if text == "":
        assert load_config([path]).base.seed == 0
        return
    with pytest.raises(ConfigError, match=str(path)):
        load_config([path])


def test_range_validation_messages():
    with pytest.raises(ConfigError, match="synth.slice_spacing_mm"):
        load_config([], ["synth.slice_spacing_mm=[5,3]"])
    with pytest.raises(ConfigError, match="ct_percentiles"):
        load_config([], ["preprocess.ct_percentiles=[99,1]"])
    with pytest.raises(ConfigError, match="override"):
        parse_override("no_equals_sign")


def test_a_config_extends_one_base_file_and_overrides_it(tmp_path):
    from pipeline.config import load_config

    (tmp_path / "base.yaml").write_text("train:\n  batch_size: 8\n  lr: 0.001\nloss:\n  name: dice_ce\n")
    (tmp_path / "arch.yaml").write_text("extends: base.yaml\ntrain:\n  lr: 0.01\n")
    cfg = load_config([tmp_path / "arch.yaml"])
    assert (cfg.train.batch_size, cfg.train.lr, cfg.loss.name) == (8, 0.01, "dice_ce")
    (tmp_path / "base.yaml").write_text("extends: arch.yaml\n")
    with pytest.raises(ConfigError, match="'extends' loops back"):
        load_config([tmp_path / "arch.yaml"])


def test_the_16_natural_configs_share_one_base_and_differ_only_in_model_and_folders():
    from pipeline.config import load_config, with_base_config

    configs = {p.stem: load_config(with_base_config([p])) for p in sorted((REPO_ROOT / "configs" / "natural").glob("*.yaml"))
               if p.name != "base.yaml"}  # fmt: skip
    assert len(configs) == 16
    own = {"out_dir", "checkpoint_dir", "reports_dir"}
    shared = {name: c.model_dump(mode="json", exclude={"model": True, "train": own}) for name, c in configs.items()}
    assert all(value == shared["fcn8s"] for name, value in shared.items() if name != "mask_rcnn")
    # Mask R-CNN also sets the paper's batch (2 images) and weight decay (1e-4); nothing else
    paper = {"model": True, "train": own | {"batch_size", "weight_decay"}}
    assert configs["mask_rcnn"].model_dump(mode="json", exclude=paper) == configs["fcn8s"].model_dump(mode="json", exclude=paper)
    assert (configs["mask_rcnn"].train.batch_size, configs["mask_rcnn"].train.weight_decay) == (2, 1e-4)
    assert all(c.model.name == name and c.train.out_dir.name == name for name, c in configs.items())
