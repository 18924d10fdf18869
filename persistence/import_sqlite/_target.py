"""The PostgreSQL side: the import's one connection, its errors, and writing rows with COPY.

The whole import is one transaction on this connection (the driver in ``__init__`` opens it), so
nothing here commits; a failure anywhere rolls back everything, the schema of a dry run too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from persistence import migrate
from persistence._translate import translate
from persistence.config import Settings
from persistence.connect import build_conninfo, open_connection, server_url
from persistence.errors import DatabaseUnavailable, PersistenceError
from persistence.import_sqlite._report import ImportFailed

__all__ = ["connect", "copy_rows", "count", "database_error", "migrate_in_transaction"]


def connect(settings: Settings) -> psycopg.Connection[Any]:
    """The import's connection: its own statement timeout, and none for idling in a transaction."""
    return open_connection(
        build_conninfo(
            settings,
            server_url(settings),
            statement_timeout=settings.import_statement_timeout,
            # the import's one transaction converts and verifies rows in Python between its
            # statements (minutes for a large file), idle in transaction all the while; the bot
            # is stopped meanwhile, and a crash rolls everything back
            idle_in_transaction_timeout=0,
        )
    )


def migrate_in_transaction(conn: psycopg.Connection[Any], settings: Settings) -> None:
    """A dry run leaves the target's schema as it is: the pending migrations run inside the
    import's transaction only, and are rolled back with it."""
    migrations = migrate.load_migrations(settings.migrations_dir)
    for migration in migrate.plan_up(migrations, migrate.read_history(conn)):
        if not migration.no_transaction:
            conn.execute(migration.sql)


def database_error(exc: psycopg.Error) -> PersistenceError:
    """Our error for a failure of the import's transaction; nothing was written."""
    error = translate(exc)
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return ImportFailed(
            f"the database cancelled a statement of the import: {error}. Nothing was imported; "
            "PERSISTENCE_IMPORT_STATEMENT_TIMEOUT bounds the import's statements (0, the "
            "default, leaves them unbounded)"
        )
    if isinstance(error, DatabaseUnavailable):
        return error
    return ImportFailed(f"the database refused the import: {error}; nothing was imported")


def copy_rows(conn: psycopg.Connection[Any], statement: str, rows: Iterable[Any]) -> None:
    """Stream ``rows`` (tuples in the statement's column order) through ``COPY ... FROM STDIN``.

    ``rows`` may be a generator that converts as it goes: memory stays bounded.
    """
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    assert row is not None
    return int(row[0])
