"""What an import tells its caller: its errors, each problem row, progress, and the final report.

Every layout reports through these, so the CLI prints every layout the same way.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

import attrs

from persistence.errors import PersistenceError

__all__ = [
    "ImportFailed",
    "ImportReport",
    "Problem",
    "Problems",
    "Progress",
    "SourceDamaged",
    "progress_stream",
]


class ImportFailed(PersistenceError):
    """The import was refused or did not verify; nothing was written."""


class SourceDamaged(ImportFailed):
    """The SQLite file is damaged (corrupt pages) and cannot be read whole; nothing was written."""


@attrs.frozen
class Problem:
    """A value that cannot be moved as it is, or (kind "note") one moved with a noted change."""

    table: str
    sqlite_id: Any
    column: str
    value: str
    reason: str
    kind: str = "invalid"


class Problems:
    """Counts each problem by kind and hands it to the caller's ``on_problem``, as it is found."""

    def __init__(self, on_problem: Callable[[Problem], None] | None) -> None:
        self.on_problem = on_problem
        self.counts = {"invalid": 0, "note": 0}

    def __call__(self, problem: Problem) -> None:
        self.counts[problem.kind] += 1
        if self.on_problem is not None:
            self.on_problem(problem)

    def invalid(self, table: str, sqlite_id: Any, column: str, value: str, reason: str) -> None:
        self(Problem(table, sqlite_id, column, value, reason))

    def note(self, table: str, sqlite_id: Any, column: str, value: str, reason: str) -> None:
        self(Problem(table, sqlite_id, column, value, reason, "note"))

    def refuse_invalid(self, skip_invalid: bool) -> None:
        """Fail the import if any row was invalid, unless the caller chose to skip them."""
        invalid = self.counts["invalid"]
        if invalid and not skip_invalid:
            raise ImportFailed(
                f"{invalid} invalid row(s); nothing was imported. The report lists "
                "each row's SQLite id, column, value and reason: fix them in a copy of the "
                "file, or run again with --skip-invalid to import the valid rows only"
            )


@attrs.frozen
class ImportReport:
    """What an import read, moved, skipped and verified.

    ``layout`` is "trades" (the first SQLite layout: the ``trades_*`` counts) or "batching"
    (the second: ``tables`` maps each table to rows read, invalid and inserted).
    """

    source: str
    dry_run: bool
    trades_read: int
    trades_valid: int
    trades_inserted: int
    trades_already_present: int
    auth_read: int
    auth_inserted: int
    invalid: int
    notes: int
    seconds: float
    verified: dict[str, str]
    layout: str = "trades"
    tables: dict[str, tuple[int, int, int]] = attrs.field(factory=dict)

    @property
    def rows_read(self) -> int:
        return self.trades_read + sum(read for read, _, _ in self.tables.values())

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """One phase's progress (``phase``: what is done to the rows, e.g. "events: checked").

    On a terminal: one line redrawn in place (phase, rows, rate, a bar). Elsewhere (a log, CI):
    one line when the phase ends. Silent without a stream (``--quiet``, or the library's
    default).
    """

    def __init__(self, total: int, stream: IO[str] | None, phase: str = "rows") -> None:
        self.total, self.stream, self.phase = total, stream, phase
        self.started, self.shown = time.monotonic(), 0.0
        self.terminal = stream is not None and stream.isatty()

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if self.stream is None or (not final and (not self.terminal or now - self.shown < 0.2)):
            return
        self.shown = now
        seconds = max(now - self.started, 1e-9)
        rate = done / seconds
        if not self.terminal:
            self.stream.write(
                f"{self.phase}: {done:,} rows in {seconds:.1f} s ({rate:,.0f} rows/s)\n"
            )
            self.stream.flush()
            return
        share = done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        self.stream.write(
            f"\r{self.phase}: [{bar:<30}] {done:,}/{self.total:,} rows, {rate:,.0f} rows/s\x1b[K"
        )
        if final:
            self.stream.write("\n")
        self.stream.flush()


def progress_stream(*, quiet: bool = False) -> IO[str] | None:
    """Where the CLI shows progress: stderr (redrawn on a terminal, a line per phase
    otherwise), or nowhere when ``quiet``."""
    return None if quiet else sys.stderr
