"""What a layout is: five steps the driver runs in order, and the one import they share.

A layout module (``layout1``, ``layout2``, …) ends with ``LAYOUT = Layout(...)``: its parts,
as plain functions, like an operation is data for the runners. The driver
(``persistence.import_sqlite.import_sqlite``) opens the file and the transaction, picks the
first layout whose ``detect`` claims the file, and calls, in order:

1. ``read(run)``: read the file's rows, convert and validate each (``convert``), name every bad
   one through ``run.problems``; may stage rows in PostgreSQL. Returns the layout's own data.
2. ``check(run, data)``: refuse what the layout cannot import (its own message); then the
   driver reads ``schwab_auth`` and refuses any invalid row unless ``--skip-invalid``.
3. ``write(run, data)``: insert, never overwriting what is stored.
4. ``verify(run, data)``: re-read the file independently (``_verify``) and compare; returns
   what was verified, for the report.
5. ``counts(data)``: the layout's figures for :class:`ImportReport`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import attrs
import psycopg

from persistence.import_sqlite._report import Problems

__all__ = ["Layout", "Run"]

Data = TypeVar("Data")


@attrs.frozen
class Run:
    """One import, as every step sees it."""

    path: Path
    source: sqlite3.Connection  # read-only, rows as sqlite3.Row
    target: psycopg.Connection[Any]  # inside the import's one transaction
    problems: Problems
    skip_invalid: bool
    progress: IO[str] | None
    batch_size: int


@attrs.frozen
class Layout(Generic[Data]):
    """One SQLite layout's import. ``name`` is ImportReport.layout."""

    name: str
    # whether the file (its path, connection, table names) holds this layout; raises
    # ImportFailed when it looks like it but lacks a table or column the import needs
    detect: Callable[[Path, sqlite3.Connection, set[str]], bool]
    read: Callable[[Run], Data]
    check: Callable[[Run, Data], None]
    write: Callable[[Run, Data], None]
    verify: Callable[[Run, Data], dict[str, str]]
    counts: Callable[[Data], dict[str, Any]]
