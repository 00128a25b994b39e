"""The model card: one typed object, written and read in one place; an invalid card names the bad key."""

from __future__ import annotations

import json

import pytest

from pipeline.config import PreprocessSettings, UNet2dSettings, VNet3dSettings
from pipeline.errors import InvalidInputError
from pipeline.modelcard import ModelCard, read_model_card, write_model_card


def _card() -> ModelCard:
    return ModelCard(
        model=VNet3dSettings(widths=(4, 8), convs=(1, 1), pools=((1, 1, 1), (2, 2, 1)), kernels=((3, 3, 1), (3, 3, 3))),
        in_channels=1,
        num_classes=3,
        labels={"0": "background", "1": "lesion", "2": "ventricles"},
        modalities=("MR",),
        patch_size=(32, 32, 8),
        target_spacing=(1.0, 1.0, 1.0),
        preprocess=PreprocessSettings(spacing_mm=(1.0, 1.0, 1.0)),
        plan_overrides={"train.batch_size": "4 (planned 2)"},
    )


def test_a_written_card_reads_back_equal_with_typed_sections(tmp_path):
    card = _card()
    write_model_card(card, tmp_path / "model_card.json")
    back = read_model_card(tmp_path / "model_card.json")
    assert back == card and back.model.pools == ((1, 1, 1), (2, 2, 1)) and not back.is_ct
    assert back.preprocess.spacing_mm == back.target_spacing  # one spacing, not a stale hand-set one beside it


def test_an_invalid_card_is_refused_naming_the_key(tmp_path):
    payload = _card().model_dump(mode="json")
    payload["model"]["kernels"] = [[3, 3, 2], [3, 3, 3]]
    payload["num_classes"] = "three"
    (tmp_path / "model_card.json").write_text(json.dumps(payload))
    with pytest.raises(InvalidInputError, match=r"model_card.json.*num_classes") as err:
        read_model_card(tmp_path / "model_card.json")
    assert "model.vnet3d" in str(err.value)


def test_a_card_written_before_the_activation_field_rebuilds_the_relu_unet_it_describes(tmp_path):
    card = _card().model_copy(update={"model": UNet2dSettings(widths=(4, 8))})
    payload = card.model_dump(mode="json")
    assert payload["model"].pop("activation") == "prelu"  # today's default
    (tmp_path / "model_card.json").write_text(json.dumps(payload))
    assert read_model_card(tmp_path / "model_card.json").model.activation == "relu"
    write_model_card(card, tmp_path / "model_card.json")  # a card that says prelu keeps it
    assert read_model_card(tmp_path / "model_card.json").model.activation == "prelu"
