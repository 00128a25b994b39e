"""The report files every training task writes: clock figures apart, plot series with equal keys per record."""

from __future__ import annotations

import json

from pipeline.training.finalize import dice_keys, split_timings, write_plot_files, write_reports

HISTORY = [
    {"epoch": 1, "train_loss": 0.9, "lr": 0.01, "train_time_s": 3.5},
    {"epoch": 2, "train_loss": 0.7, "lr": 0.005, "train_time_s": 3.1, "val_dice_mean": 0.6, "val_dice_liver": 0.8,
     "val_dice_spleen": 0.4, "val_loss": 0.5},
    {"epoch": 3, "train_loss": 0.6, "lr": 0.001, "train_time_s": 3.0},
]  # fmt: skip


def test_split_timings_moves_only_the_clock_figures():
    record, timings = split_timings({"epoch": 2, "train_minutes": 1.5, "val_dice_mean": 0.6, "samples_per_s": 9.0})
    assert record == {"epoch": 2, "val_dice_mean": 0.6}
    assert timings == {"train_minutes": 1.5, "samples_per_s": 9.0}


def test_write_reports_keeps_the_clock_out_of_the_files_dvc_hashes(tmp_path):
    write_reports(tmp_path, {"epochs": 3, "train_minutes": 0.16, "val_dice_mean": 0.6}, HISTORY)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"epochs": 3, "val_dice_mean": 0.6}
    history = json.loads((tmp_path / "details" / "history.json").read_text())
    assert [h.get("train_time_s") for h in history] == [None, None, None] and history[1]["val_loss"] == 0.5
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings == {
        "train_minutes": 0.16,
        "epochs": [{"epoch": e, "train_time_s": t} for e, t in ((1, 3.5), (2, 3.1), (3, 3.0))],
    }


def test_plot_files_hold_the_named_series_and_only_validated_epochs(tmp_path):
    keys = dice_keys(HISTORY)
    assert keys == ("val_dice_mean", "val_dice_liver", "val_dice_spleen")
    write_plot_files(HISTORY, tmp_path, keys)
    train = json.loads((tmp_path / "train.json").read_text())
    assert train == [{"epoch": h["epoch"], "train_loss": h["train_loss"], "lr": h["lr"]} for h in HISTORY]
    validation = json.loads((tmp_path / "validation.json").read_text())
    assert validation == [{"epoch": 2, "val_dice_mean": 0.6, "val_dice_liver": 0.8, "val_dice_spleen": 0.4}]
    assert list(validation[0]) == ["epoch", *keys]  # the order DVC's plot files were written in


def test_plot_files_of_a_run_without_validation_are_empty_series(tmp_path):
    history = [h for h in HISTORY if "val_dice_mean" not in h]
    write_plot_files(history, tmp_path, dice_keys(history), train_keys=("train_loss",))
    assert json.loads((tmp_path / "train.json").read_text()) == [{"epoch": 1, "train_loss": 0.9}, {"epoch": 3, "train_loss": 0.6}]
    assert json.loads((tmp_path / "validation.json").read_text()) == []
