"""Problems in dataset files: `Problem` (one ``path:line: field: message`` line), `DataError`, reports."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_PROBLEMS_IN_MESSAGE = 5


@dataclass(frozen=True)
class Problem:
    """One problem in one record. ``line`` is 1-based (``None`` for a whole folder or file).

    In a JSON array file ``line`` is the line where the record starts and ``field`` is prefixed
    with the record index, e.g. ``[3].images``.
    """

    path: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.field}: {self.message}"


def format_problems(problems: Iterable[Problem], limit: int = MAX_PROBLEMS_IN_MESSAGE) -> str:
    """The first ``limit`` problems, one per line, plus a count of the rest."""
    problems = list(problems)
    lines = [str(problem) for problem in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more problem(s)")
    return "\n".join(lines)


class DataError(ValueError):
    """Dataset input is invalid. ``.problems`` lists every problem; ``str`` shows the first ones."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems: list[Problem] = list(problems)
        super().__init__(format_problems(self.problems))


class FieldError(ValueError):
    """One bad field of one record (internal: readers turn it into a `Problem` with path and line)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Location:
    """Where a record is: file, 1-based line, and its index when the file is a JSON array."""

    path: str
    line: int | None
    index: int | None = None

    def problem(self, field: str, message: str) -> Problem:
        prefix = "" if self.index is None else f"[{self.index}]."
        return Problem(self.path, self.line, f"{prefix}{field}", message)

    def __str__(self) -> str:
        return self.path if self.line is None else f"{self.path}:{self.line}"


class RecordProblems:
    """Collects the problems of one record so that every bad field is reported, not only the first."""

    def __init__(self, location: Location):
        self.location = location
        self.problems: list[Problem] = []

    def add(self, field: str, message: str) -> None:
        self.problems.append(self.location.problem(field, message))

    def check(self, function, *args, **kwargs):
        """Return ``function(*args, **kwargs)``; on `FieldError` record it and return ``None``."""
        try:
            return function(*args, **kwargs)
        except FieldError as error:
            self.add(error.field, error.message)
            return None

    def __bool__(self) -> bool:
        return bool(self.problems)


@dataclass
class ValidationReport:
    """Outcome of `validate_files`. A file that yields no record at all (missing, unreadable, empty) is
    counted in ``num_unread_files``, not as a record; its problem is in ``problems``."""

    problems: list[Problem] = field(default_factory=list)
    num_records: int = 0
    num_ok: int = 0
    num_unread_files: int = 0

    @property
    def num_with_problems(self) -> int:
        return self.num_records - self.num_ok

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        records = "1 record" if self.num_records == 1 else f"{self.num_records} records"
        text = f"{records}, {self.num_ok} ok, {self.num_with_problems} with problems"
        if self.num_unread_files:
            files = "1 file" if self.num_unread_files == 1 else f"{self.num_unread_files} files"
            text += f"; {files} read no records"
        return text

    def skipped(self) -> str:
        """What a load that skips bad input left out, e.g. ``skipped 2 of 10 records with problems``."""
        text = f"skipped {self.num_with_problems} of {self.num_records} records with problems"
        unread = self.num_unread_files
        if unread:
            text += f" and {unread} input{'s' if unread != 1 else ''} that read no records"
        return text

    def add(self, item: Any) -> None:
        """Count one stream item: a good ``(location, episode)``, or a `DataError` (a bad record, or a
        whole input's problem: one problem on field ``file``, which the readers give only to a file or
        folder that yields no record)."""
        if not isinstance(item, DataError):
            self.num_records += 1
            self.num_ok += 1
            return
        self.problems.extend(item.problems)
        if len(item.problems) == 1 and item.problems[0].field == "file":
            self.num_unread_files += 1
        else:
            self.num_records += 1


def read_each(records: Iterable, read: Callable[[Any, Location], Any]) -> Iterator:
    """``(location, read(record, location))`` per ``(location, record)`` item; a `Problem` item, or a
    `DataError` raised by ``read``, comes out as a `DataError` (one bad record never stops the stream)."""
    for item in records:
        if isinstance(item, Problem):
            yield DataError([item])
            continue
        location, record = item
        try:
            yield location, read(record, location)
        except DataError as error:
            yield error
