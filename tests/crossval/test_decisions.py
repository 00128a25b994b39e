"""decisions.json: files written before object_counts still read; new files do not carry the replaced key."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.crossval.decisions import Decisions, read_decisions


def test_an_older_file_with_one_object_reads_and_a_new_file_does_not_write_it(tmp_path):
    older = {"configurations": ["unet2d"], "models": ["models/unet2d/fold_0"], "folds": [0], "cases": 1, "scores": {},
             "postprocessing": {"largest_component_foreground": False, "largest_component_classes": [1]},
             "one_object": {"foreground": False, "classes": [1]}}  # fmt: skip
    (tmp_path / "decisions.json").write_text(json.dumps(older))
    read = read_decisions(tmp_path / "decisions.json")
    assert read.one_object == {"foreground": False, "classes": [1]}
    assert read.models == (Path("models/unet2d/fold_0"),) and read.postprocessing_decision.classes == (1,)
    written = read.model_dump(mode="json")
    assert "one_object" not in written and Decisions.model_validate(written).object_counts == {}
