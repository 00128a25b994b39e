"""Cross-validation split files: deterministic, seeded, complete; a user's split is checked before it is honoured."""

from __future__ import annotations

import json

import pytest

from pipeline.crossval.splits import make_splits, write_splits
from pipeline.errors import InvalidInputError

CASES = [f"case_{i:02d}" for i in range(12)]


def test_default_split_is_deterministic_complete_and_balanced():
    splits = make_splits(list(reversed(CASES)), 5, seed=12345)
    assert splits == make_splits(CASES, 5, seed=12345)  # order of the input does not matter
    assert splits != make_splits(CASES, 5, seed=1)
    assert [len(f["val"]) for f in splits] == [3, 3, 2, 2, 2]  # 12 = 5 x 2 + 2: the first two folds take the remainder
    assert sorted(c for f in splits for c in f["val"]) == CASES  # every case validated exactly once
    for fold in splits:
        assert set(fold["train"]) == set(CASES) - set(fold["val"])


def test_fewer_cases_than_folds_gives_one_fold_per_case(tmp_path):
    splits = write_splits(CASES[:3], 5, 0, tmp_path / "splits.json")
    assert len(splits) == 3 and all(len(f["val"]) == 1 for f in splits)
    assert json.loads((tmp_path / "splits.json").read_text()) == splits
    with pytest.raises(InvalidInputError, match="1 labelled case"):
        write_splits(CASES[:1], 5, 0, tmp_path / "one.json")


def test_a_custom_split_is_honoured_and_every_problem_of_a_bad_one_is_named(tmp_path):
    good = [{"train": CASES[4:], "val": CASES[:4]}, {"train": CASES[:4], "val": CASES[4:]}]
    (tmp_path / "mine.json").write_text(json.dumps(good))
    assert write_splits(CASES, 5, 0, tmp_path / "splits.json", tmp_path / "mine.json") == good
    bad = [{"train": CASES[3:] + ["ghost"], "val": CASES[:4]}, {"train": CASES[:2], "val": CASES[2:]}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InvalidInputError) as err:
        write_splits(CASES, 5, 0, tmp_path / "out.json", tmp_path / "bad.json")
    text = str(err.value)
    assert "bad.json" in text and "['ghost']" in text and "trains on its own validation cases: ['case_03']" in text
    assert "case case_02 is validated in folds 0 and 1" in text
    assert not (tmp_path / "out.json").exists()
