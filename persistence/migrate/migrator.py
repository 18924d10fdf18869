"""Running migrations: the advisory lock, one transaction per migration with its history row.

Every run takes a PostgreSQL advisory lock on a connection of its own (never a pooled one),
checks the history against the files before anything runs, and applies each migration together
with its history row in one transaction. The lock is released on every path.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import attrs
import psycopg

from persistence.config import Settings
from persistence.connect import build_conninfo, open_connection, server_url
from persistence.errors import MigrationFailed, MigrationLockTimeout
from persistence.migrate.history import (
    AppliedMigration,
    MigrationStatus,
    create_history_table,
    plan_down,
    plan_up,
    read_history,
    record,
    statuses,
)
from persistence.migrate.source import Migration, load_migrations

__all__ = ["LOCK_KEY", "RunResult", "apply", "rollback", "status", "verify"]

logger = logging.getLogger(__name__)

# one key for this runner; advisory locks are per database, so databases never contend
LOCK_KEY = int.from_bytes(hashlib.sha256(b"persistence.migrate").digest()[:8], "big", signed=True)

Connection = psycopg.Connection[Any]


@attrs.frozen
class RunResult:
    """What a run did (or, with dry_run, would do)."""

    direction: Literal["up", "down"]
    migrations: tuple[Migration, ...]
    durations_ms: tuple[int, ...] = ()
    dry_run: bool = False


@contextmanager
def _locked_connection(conninfo: str, *, lock_timeout: float) -> Iterator[Connection]:
    """A dedicated connection holding the migration advisory lock; released on every path."""
    conn = open_connection(conninfo, autocommit=True)
    try:
        deadline = time.monotonic() + lock_timeout
        delay = 0.02
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
            if time.monotonic() >= deadline:
                raise MigrationLockTimeout(
                    f"another migration runner held the lock for more than {lock_timeout:g} s; "
                    "wait for it, or raise PERSISTENCE_MIGRATION_LOCK_TIMEOUT"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        try:
            yield conn
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    finally:
        conn.close()


def _failure(path: Path, sql: str, exc: psycopg.Error) -> MigrationFailed:
    position = getattr(exc.diag, "statement_position", None)
    where = ""
    if position:
        where = f", line {sql[: int(position) - 1].count(chr(10)) + 1}"
    message = (exc.diag.message_primary or str(exc)).strip()
    return MigrationFailed(
        f"{path}{where}: {message}; the migration was rolled back and the history is unchanged"
    )


def _run_one(
    conn: Connection, migration: Migration, direction: str, ddl_lock_timeout: float
) -> int:
    up = direction == "up"
    sql = migration.sql if up else migration.down_sql
    path = migration.path if up else migration.down_path
    no_transaction = migration.no_transaction if up else migration.down_no_transaction
    assert sql is not None and path is not None
    timeout = f"{round(ddl_lock_timeout * 1000)}ms"
    start = time.perf_counter()

    def elapsed_ms() -> int:
        return round((time.perf_counter() - start) * 1000)

    try:
        if no_transaction:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (timeout,))
            try:
                conn.execute(sql)
            finally:
                conn.execute("RESET lock_timeout")
            record(conn, migration, direction, elapsed_ms())
        else:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
                conn.execute(sql)
                record(conn, migration, direction, elapsed_ms())
    except psycopg.Error as exc:
        raise _failure(path, sql, exc) from None
    return elapsed_ms()


def _conninfo(settings: Settings) -> str:
    return build_conninfo(
        settings, server_url(settings), statement_timeout=settings.migration_statement_timeout
    )


def _migrations(settings: Settings, directory: Path | None) -> list[Migration]:
    return load_migrations(directory or settings.migrations_dir)


def _run(
    settings: Settings | None,
    migrations_dir: Path | None,
    direction: Literal["up", "down"],
    plan: Callable[[list[Migration], list[AppliedMigration]], list[Migration]],
    dry_run: bool,
) -> RunResult:
    """Under the lock: check the history, plan, then run each migration with its history row."""
    settings = settings or Settings.from_env()
    migrations = _migrations(settings, migrations_dir)
    with _locked_connection(
        _conninfo(settings), lock_timeout=settings.migration_lock_timeout
    ) as conn:
        chosen = plan(migrations, read_history(conn))
        if dry_run or not chosen:
            return RunResult(direction, tuple(chosen), dry_run=dry_run)
        if direction == "up":
            create_history_table(conn)
        durations = []
        for migration in chosen:
            path = migration.path if direction == "up" else migration.down_path
            assert path is not None  # plan_down refuses a migration without its down file
            logger.debug("%s %s", "applying" if direction == "up" else "reverting", path.name)
            durations.append(_run_one(conn, migration, direction, settings.ddl_lock_timeout))
            logger.debug("%s done in %d ms", path.name, durations[-1])
        return RunResult(direction, tuple(chosen), tuple(durations))


def apply(
    settings: Settings | None = None,
    *,
    migrations_dir: Path | None = None,
    target: int | None = None,
    dry_run: bool = False,
) -> RunResult:
    """Apply the pending migrations (up to ``target``); with ``dry_run``, only plan them."""
    return _run(settings, migrations_dir, "up", partial(plan_up, target=target), dry_run)


def rollback(
    settings: Settings | None = None,
    *,
    migrations_dir: Path | None = None,
    target: int | None = None,
    steps: int | None = None,
    dry_run: bool = False,
) -> RunResult:
    """Revert applied migrations, newest first: to ``target``, or ``steps`` of them (default 1)."""
    plan = partial(plan_down, target=target, steps=steps)
    return _run(settings, migrations_dir, "down", plan, dry_run)


def _files_and_history(
    settings: Settings | None, migrations_dir: Path | None
) -> tuple[list[Migration], list[AppliedMigration]]:
    """Both, read without the lock: status and verify change nothing."""
    settings = settings or Settings.from_env()
    migrations = _migrations(settings, migrations_dir)
    with open_connection(_conninfo(settings), autocommit=True) as conn:
        return migrations, read_history(conn)


def status(
    settings: Settings | None = None, *, migrations_dir: Path | None = None
) -> list[MigrationStatus]:
    """Every version known to the files or the history, with its state. Takes no lock."""
    return statuses(*_files_and_history(settings, migrations_dir))


def verify(
    settings: Settings | None = None, *, migrations_dir: Path | None = None
) -> list[Migration]:
    """Raise MigrationDrift when history and files disagree; return the pending migrations."""
    return plan_up(*_files_and_history(settings, migrations_dir))
