"""The history table, and the files compared with it: drift checks, plans and each version's state.

Reading and writing ``schema_migrations`` is here; everything else is pure, so the checks run
(and are tested) before anything touches the schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import attrs
import psycopg

from persistence.errors import MigrationDrift, MigrationError
from persistence.migrate.source import Migration

__all__ = [
    "HISTORY_TABLE",
    "AppliedMigration",
    "MigrationStatus",
    "check_history",
    "create_history_table",
    "plan_down",
    "plan_up",
    "read_history",
    "record",
    "statuses",
]

HISTORY_TABLE = "schema_migrations"

Connection = psycopg.Connection[Any]


@attrs.frozen
class AppliedMigration:
    """A row of the history table."""

    version: int
    checksum: str
    description: str = ""
    applied_at: datetime | None = None
    execution_ms: int = 0


@attrs.frozen
class MigrationStatus:
    """A version as seen from both the files and the history."""

    version: int
    description: str
    state: Literal["applied", "pending", "changed", "missing"]
    applied_at: datetime | None = None
    execution_ms: int | None = None


def read_history(conn: Connection) -> list[AppliedMigration]:
    """The history table's rows by version; none when the table does not exist yet."""
    exists = conn.execute("SELECT to_regclass(%s)", (HISTORY_TABLE,)).fetchone()
    if exists is None or exists[0] is None:
        return []
    rows = conn.execute(
        f"SELECT version, checksum, description, applied_at, execution_ms FROM {HISTORY_TABLE} "
        "ORDER BY version"
    ).fetchall()
    return [AppliedMigration(*row) for row in rows]


def create_history_table(conn: Connection) -> None:
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
            version bigint PRIMARY KEY,
            description text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(),
            execution_ms bigint NOT NULL
        )"""
    )


def record(conn: Connection, migration: Migration, direction: str, elapsed_ms: int) -> None:
    """Write what a migration did to the history: its row added (up) or removed (down)."""
    if direction == "up":
        conn.execute(
            f"INSERT INTO {HISTORY_TABLE} (version, description, checksum, execution_ms) "
            "VALUES (%s, %s, %s, %s)",
            (migration.version, migration.description, migration.checksum, elapsed_ms),
        )
    else:
        conn.execute(f"DELETE FROM {HISTORY_TABLE} WHERE version = %s", (migration.version,))


def check_history(migrations: Sequence[Migration], applied: Sequence[AppliedMigration]) -> None:
    """Raise MigrationDrift listing every changed, missing or out-of-order migration."""
    by_version = {m.version: m for m in migrations}
    problems = []
    for row in applied:
        migration = by_version.get(row.version)
        if migration is None:
            problems.append(
                f"version {row.version} ({row.description}) is applied but has no file: the "
                "database is ahead of this code; deploy the code that has it"
            )
        elif migration.checksum != row.checksum:
            problems.append(
                f"{migration.path} was changed after it was applied (checksum {row.checksum[:12]} "
                f"in the database, {migration.checksum[:12]} on disk): restore the applied file "
                "and put the change in a new migration"
            )
    newest = max((row.version for row in applied), default=0)
    done = {row.version for row in applied}
    for migration in migrations:
        if migration.version < newest and migration.version not in done:
            problems.append(
                f"{migration.path} was never applied but is older than applied version {newest}: "
                "renumber it after the newest applied migration"
            )
    if problems:
        raise MigrationDrift(
            "migration history does not match the files:\n  " + "\n  ".join(problems)
        )


def plan_up(
    migrations: Sequence[Migration],
    applied: Sequence[AppliedMigration],
    *,
    target: int | None = None,
) -> list[Migration]:
    """The pending migrations up to ``target`` (all when None), oldest first."""
    check_history(migrations, applied)
    done = {row.version for row in applied}
    return [
        m for m in migrations if m.version not in done and (target is None or m.version <= target)
    ]


def plan_down(
    migrations: Sequence[Migration],
    applied: Sequence[AppliedMigration],
    *,
    target: int | None = None,
    steps: int | None = None,
) -> list[Migration]:
    """The applied migrations to revert, newest first: down to ``target``, or ``steps`` of them."""
    if target is not None and steps is not None:
        raise MigrationError("give either a target version or a number of steps, not both")
    check_history(migrations, applied)
    by_version = {m.version: m for m in migrations}
    newest_first = [by_version[row.version] for row in reversed(applied)]
    if target is not None:
        chosen = [m for m in newest_first if m.version > target]
    else:
        chosen = newest_first[: 1 if steps is None else steps]
    for migration in chosen:
        if migration.down_sql is None:
            raise MigrationError(
                f"{migration.path} has no .down.sql file: it cannot be rolled back"
            )
    return chosen


def statuses(
    migrations: Sequence[Migration], applied: Sequence[AppliedMigration]
) -> list[MigrationStatus]:
    """Every version known to the files or the history, with its state, by version."""
    by_version = {row.version: row for row in applied}
    rows = []
    for migration in migrations:
        row = by_version.pop(migration.version, None)
        if row is None:
            rows.append(MigrationStatus(migration.version, migration.description, "pending"))
        else:
            state: Literal["applied", "changed"] = (
                "applied" if row.checksum == migration.checksum else "changed"
            )
            rows.append(
                MigrationStatus(
                    migration.version,
                    migration.description,
                    state,
                    row.applied_at,
                    row.execution_ms,
                )
            )
    for row in by_version.values():
        rows.append(
            MigrationStatus(
                row.version, row.description, "missing", row.applied_at, row.execution_ms
            )
        )
    return sorted(rows, key=lambda r: r.version)
