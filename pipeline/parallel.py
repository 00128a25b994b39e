"""Run one function per case, in worker processes or inline, and turn every per-case failure into a :class:`Problem`.

The one place that decides what a failure of one case means (rows P3, P4 of docs/RELIABILITY.md):
- our :class:`InvalidInputError` becomes a problem with its file, code and reason;
- any other exception (a library's ``ValueError``, ``MemoryError``, ...) becomes a problem naming the case and
  its first file, never a bare traceback (the traceback goes to the debug log);
- a worker process that dies (killed for memory, a crash in native code) ends its case only: the cases that
  were still pending run again, each in a fresh single-worker pool, so the case that kills its worker is
  found and named, and every other case is still processed;
- a full disk (``ENOSPC``) or a quota error stops the whole stage at once with :class:`DiskFullError`,
  because every later write would fail too. Writers use :func:`pipeline.io_utils.atomic_path`, so nothing
  half-written is left.
"""

from __future__ import annotations

import errno
import logging
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.errors import DiskFullError, InvalidInputError, Problem

log = logging.getLogger(__name__)

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
IO_THREADS = 2  # files of one case read (inflated, hashed) side by side: zlib/ISA-L and hashlib release the GIL


def thread_map(function: Callable[[Any], Any], items: Sequence[Any], threads: int = IO_THREADS) -> list[Any]:
    """``[function(item) for item in items]`` in up to ``threads`` threads, in order; the first item's exception (in
    list order) is raised, after every call has ended. For work within one case that releases the GIL (reading,
    inflating and hashing files; SciPy's interpolation)."""
    if len(items) <= 1 or threads <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        futures = [pool.submit(function, item) for item in items]
    return [future.result() for future in futures]


@dataclass(frozen=True)
class CaseJob:
    """One unit of work: the case it belongs to, the file a problem should name, and the call's arguments."""

    case_id: str
    path: Path
    args: tuple


def map_cases(
    function: Callable[..., Any], jobs: Sequence[CaseJob], num_workers: int = 0, progress: str | None = None
) -> list[Any | Problem]:
    """Call ``function(*job.args)`` for every job; return its result, or a :class:`Problem` where it failed.

    Args:
        function: a module-level function (picklable for workers).
        jobs: the cases, in the order the results are returned.
        num_workers: worker processes; 0 runs inline.
        progress: label of a progress bar over cases (none if ``None``).

    Raises:
        DiskFullError: the disk filled up (the stage cannot go on).
    """
    bar = tqdm(total=len(jobs), desc=progress, unit="case", disable=None if progress else True)
    try:
        if num_workers <= 0 or len(jobs) <= 1:
            return [_inline(function, job, bar) for job in jobs]
        results: dict[int, Any] = {}
        pending = _run_pool(function, jobs, range(len(jobs)), num_workers, results, bar)
        for index in pending:  # the pool broke: isolate each remaining case so the one that kills its worker is named
            _run_pool(function, jobs, [index], 1, results, bar)
        return [results[i] for i in range(len(jobs))]
    finally:
        bar.close()


def _run_pool(function, jobs: Sequence[CaseJob], indices, workers: int, results: dict[int, Any], bar) -> list[int]:
    """Run ``indices`` in one pool; store results; return the indices lost to a broken pool (several) or name it (one)."""
    indices = list(indices)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures: dict[int, Future] = {i: pool.submit(function, *jobs[i].args) for i in indices}
        lost = []
        for index, future in futures.items():
            try:
                results[index] = _outcome(jobs[index], future.result)
                bar.update(1)
            except BrokenProcessPool:
                lost.append(index)
    if len(indices) == 1 and lost:
        job = jobs[indices[0]]
        results[indices[0]] = Problem(
            str(job.path),
            "P4",
            "error",
            "the worker process processing this case died (killed for memory, or a crash in a native library); "
            "the other cases were still processed",
            job.case_id,
        )
        bar.update(1)
        return []
    return lost


def run_guarded(case_id: str, path: Path, call: Callable[[], Any]) -> Any | Problem:
    """Run ``call()`` for one case in this process, with :func:`map_cases`' rules for its failures.

    Raises:
        DiskFullError: the disk filled up.
    """
    return _outcome(CaseJob(case_id, Path(path), ()), call)


def _inline(function, job: CaseJob, bar) -> Any | Problem:
    outcome = _outcome(job, lambda: function(*job.args))
    bar.update(1)
    return outcome


def _outcome(job: CaseJob, call: Callable[[], Any]) -> Any | Problem:
    try:
        return call()
    except BrokenProcessPool:
        raise
    except InvalidInputError as exc:
        return Problem(str(exc.path), exc.code or "P3", "error", exc.reason, exc.case or job.case_id)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(job.path, exc) from None
        return _unexpected(job, exc)
    except Exception as exc:  # a library's exception on one case becomes our error naming that case
        return _unexpected(job, exc)


def _unexpected(job: CaseJob, exc: BaseException) -> Problem:
    log.debug("case %s failed:\n%s", job.case_id, "".join(traceback.format_exception(exc)))
    return Problem(str(job.path), "P3", "error", f"{type(exc).__name__}: {exc}", job.case_id)


def split_outcomes(outcomes: Sequence[Any | Problem]) -> tuple[list[Any], list[Problem]]:
    """Separate results from problems (order kept)."""
    return [o for o in outcomes if not isinstance(o, Problem)], [o for o in outcomes if isinstance(o, Problem)]
