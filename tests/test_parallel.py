"""Per-case failures (rows P3-P5): each becomes a problem naming its case; a dead worker ends only its case; a full disk stops."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pipeline.errors import DiskFullError, InvalidInputError, Problem
from pipeline.parallel import CaseJob, map_cases, run_guarded, thread_map


def work(kind: str) -> str:
    """Module-level, so worker processes can run it."""
    if kind == "die":
        os._exit(9)  # what the kernel's OOM killer leaves behind: no exception, no traceback
    if kind == "library":
        raise ValueError("operands could not be broadcast together")
    if kind == "ours":
        raise InvalidInputError("/data/x.nii.gz", "truncated", "x", "F1")
    if kind == "full":
        raise OSError(errno.ENOSPC, "No space left on device")
    return kind.upper()


def _jobs(*kinds: str) -> list[CaseJob]:
    return [CaseJob(f"case{i}", Path(f"/data/case{i}.nii.gz"), (kind,)) for i, kind in enumerate(kinds)]


@pytest.mark.parametrize("workers", [0, 2])
def test_each_failure_is_a_problem_naming_its_case_and_the_others_finish(workers):
    outcomes = map_cases(work, _jobs("a", "library", "b", "ours", "c"), workers)
    assert outcomes[0::2] == ["A", "B", "C"]
    library, ours = outcomes[1], outcomes[3]
    assert isinstance(library, Problem) and isinstance(ours, Problem)
    assert (library.path, library.case, library.code) == ("/data/case1.nii.gz", "case1", "P3")
    assert library.message == "ValueError: operands could not be broadcast together"
    assert (ours.path, ours.case, ours.code, ours.message) == ("/data/x.nii.gz", "x", "F1", "truncated")


def test_a_worker_that_dies_is_reported_for_its_case_and_every_other_case_is_processed():
    outcomes = map_cases(work, _jobs("a", "b", "die", "c", "d", "e"), num_workers=2)
    assert [o for o in outcomes if not isinstance(o, Problem)] == ["A", "B", "C", "D", "E"]
    (dead,) = [o for o in outcomes if isinstance(o, Problem)]
    assert (dead.case, dead.code, dead.path) == ("case2", "P4", "/data/case2.nii.gz")
    assert "worker process" in dead.message and "died" in dead.message


@pytest.mark.parametrize("workers", [0, 2])
def test_a_full_disk_stops_the_stage_with_a_clear_error(workers):
    with pytest.raises(DiskFullError) as stopped:
        map_cases(work, _jobs("a", "full", "b"), workers)
    assert str(stopped.value).startswith("/data/case1.nii.gz: [P5] no space left on the device")
    assert "earlier results are untouched" in str(stopped.value)
    assert run_guarded("x", Path("/data/x"), lambda: work("a")) == "A"


def test_thread_map_keeps_the_order_and_raises_the_first_failure_in_list_order():
    import threading
    import time

    seen = []

    def slow_square(n: int) -> int:
        time.sleep(0.05 * (3 - n))  # later items finish first
        seen.append(threading.current_thread().name)
        if n in (1, 2):
            raise InvalidInputError(f"/data/{n}.nii.gz", "truncated", str(n), "F1")
        return n * n

    assert thread_map(lambda n: n * n, [3, 1, 2]) == [9, 1, 4]
    with pytest.raises(InvalidInputError, match="/data/1.nii.gz"):  # item 2 fails first in time; item 1 is named
        thread_map(slow_square, [0, 1, 2])
    assert len(seen) == 3  # every call ended before the error was raised
    assert len(set(seen)) == 2  # in two threads
