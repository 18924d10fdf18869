"""The ``schwab_auth`` table, which the first two layouts share: read, checked, stored sealed.

Tokens are never shown in the report. They are sealed on the way in (persistence.tokens), so
the driver asks for the key before anything else is done.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

from persistence.errors import ValidationError
from persistence.import_sqlite._report import Problems
from persistence.import_sqlite.convert import Invalid, to_datetime, validation_column
from persistence.models import SchwabAuth
from persistence.operations import auth as auth_ops
from persistence.runners import run_on
from persistence.tokens import Keyring

__all__ = ["has_tokens", "insert_auth", "read_auth"]

HIDDEN = "(not shown)"


def has_tokens(source: sqlite3.Connection) -> bool:
    try:
        return bool(source.execute("SELECT count(*) FROM schwab_auth").fetchone()[0])
    except sqlite3.OperationalError:
        return False  # a file from before the bot kept tokens


def _auth_from_sqlite(row: sqlite3.Row) -> SchwabAuth:
    fields: dict[str, Any] = {}
    for column in ("access_token", "refresh_token"):
        fields[column] = row[column]
    for column in ("access_token_fetched_at", "refresh_token_fetched_at"):
        fields[column], _ = to_datetime(column, row[column])
    try:
        return SchwabAuth(**fields)
    except ValidationError as error:
        column = validation_column(error, "row")
        raise Invalid(column, None, str(error).split(":", 1)[-1].strip()) from None


def read_auth(source: sqlite3.Connection, problems: Problems) -> tuple[int, SchwabAuth | None]:
    """Rows read, and the tokens to store (the last valid row), or None."""
    try:
        rows = source.execute("SELECT * FROM schwab_auth").fetchall()
    except sqlite3.OperationalError:
        return 0, None  # a file from before the bot kept tokens
    chosen = None
    for row in rows:
        try:
            chosen = _auth_from_sqlite(row)
        except Invalid as error:
            problems.invalid("schwab_auth", row["id"], error.column, HIDDEN, error.reason)
    return len(rows), chosen


def insert_auth(
    conn: psycopg.Connection[Any], auth: SchwabAuth, keyring: Keyring | None, problems: Problems
) -> int:
    """Store the tokens sealed (persistence.tokens), unless tokens are stored already."""
    inserted: int = run_on(conn, auth_ops.insert_if_absent(keyring, auth))
    if not inserted:
        problems.note("schwab_auth", 1, "access_token", HIDDEN, "tokens already stored: kept")
    return inserted
