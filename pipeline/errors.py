"""Project exceptions: every message names the file (and case) and the defect."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class SegPipeError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(SegPipeError):
    """A configuration file or override is invalid; the message names the key and the file."""


class InvalidInputError(SegPipeError):
    """One input file is unusable.

    Args:
        path: the offending file.
        reason: what is wrong, with the values involved.
        case: the case id, when known.
        code: the reliability row (e.g. ``"F1"``), when one applies.
    """

    def __init__(self, path: Path | str, reason: str, case: str | None = None, code: str | None = None):
        self.path = Path(path)
        self.reason = reason
        self.case = case
        self.code = code
        where = f"{self.path}" + (f" (case {case})" if case else "")
        tag = f"[{code}] " if code else ""
        super().__init__(f"{where}: {tag}{reason}")

    def __reduce__(self):
        """Pickle by the constructor's arguments, so the error crosses from a worker process intact."""
        return (type(self), (self.path, self.reason, self.case, self.code))


@dataclass(frozen=True)
class Problem:
    """One finding of a dataset check, reported on one line that starts with the path."""

    path: str
    code: str
    severity: str  # "error" or "warning"
    message: str
    case: str | None = None

    def line(self) -> str:
        """Return the human-readable line: ``PATH: SEVERITY [CODE] (case X) message``."""
        case = f" (case {self.case})" if self.case else ""
        return f"{self.path}: {self.severity} [{self.code}]{case} {self.message}"


class DatasetError(SegPipeError):
    """A dataset has one or more errors; all of them are listed, not only the first."""

    def __init__(self, problems: list[Problem], context: str = "dataset check failed"):
        self.problems = problems
        self.context = context
        lines = "\n".join(p.line() for p in problems)
        super().__init__(f"{context}: {len(problems)} problem(s)\n{lines}")

    def __reduce__(self):
        return (type(self), (self.problems, self.context))


class DiskFullError(SegPipeError):
    """The disk filled up while writing (row P5): the stage stops; atomic writes leave nothing half-written."""

    def __init__(self, path: Path | str, cause: OSError):
        self.path, self.cause = Path(path), cause
        super().__init__(
            f"{self.path}: [P5] no space left on the device while processing this file ({cause.strerror or cause}); "
            "the stage stopped, no output was half-written, earlier results are untouched: free space and run it again"
        )

    def __reduce__(self):
        return (type(self), (self.path, self.cause))
