"""The SQLite side: the bot's file, opened read-only, checked whole before anything is done.

A damaged file (corrupt pages) is refused before PostgreSQL is touched; damage met later, while
rows are read or verified, is turned into the same error by :func:`source_error`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from persistence.import_sqlite._report import ImportFailed, SourceDamaged

__all__ = ["open_read_only", "open_source", "open_text", "source_error"]

# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB
_DAMAGE_CODES = (11, 26)


def open_read_only(path: Path) -> sqlite3.Connection:
    """The SQLite file, opened so that nothing can write to it."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def open_text(path: Path) -> sqlite3.Connection:
    """The file read-only, text that is not UTF-8 decoded with surrogates (to be named, where
    the default decoding would fail the whole read)."""
    conn = open_read_only(path)
    conn.text_factory = lambda raw: raw.decode("utf-8", "surrogateescape")
    return conn


def open_source(path: Path) -> tuple[sqlite3.Connection, set[str]]:
    """The file, read-only, rows as ``sqlite3.Row``, and the names of its tables."""
    if not path.is_file():
        raise ImportFailed(f"{path} is not a file")
    try:
        conn = open_read_only(path)
        conn.row_factory = sqlite3.Row
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise ImportFailed(f"{path} is not a SQLite database the import can read: {exc}") from None
    try:
        _check_intact(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise source_error(path, exc) from None
    return conn, names


def _check_intact(conn: sqlite3.Connection) -> None:
    """Raise sqlite3.DatabaseError (SQLITE_CORRUPT) unless SQLite finds every page intact.

    ``quick_check`` walks each table's and index's pages (about a second for a million rows), so
    a damaged file is refused before anything, even a migration, touches PostgreSQL.
    """
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        found = " ".join(" ".join(problems).split())  # on one line
        error = sqlite3.DatabaseError(f"database disk image is malformed ({found[:200]})")
        error.sqlite_errorcode = 11  # SQLITE_CORRUPT, as SQLite itself reports it
        raise error


def source_error(path: Path, exc: sqlite3.DatabaseError) -> ImportFailed:
    """Our error for a failure reading the SQLite file at ``path``; nothing was written."""
    reason = str(exc).strip() or type(exc).__name__
    if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in _DAMAGE_CODES:
        return SourceDamaged(
            f"{path} is damaged: {reason}; nothing was imported. Recover what SQLite still can "
            f"into a new file (`sqlite3 {path} .recover | sqlite3 recovered.db`) and import "
            "that, after checking it"
        )
    return ImportFailed(f"reading {path} failed: {reason}; nothing was imported")
