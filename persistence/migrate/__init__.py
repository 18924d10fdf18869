"""Versioned raw-SQL migrations: load, check, plan, apply, roll back, report.

Files are ``NNNN_description.up.sql`` with a ``.down.sql`` beside each. A first line
``-- persistence:no-transaction`` runs that file outside a transaction (for
``CREATE INDEX CONCURRENTLY``); keep such a file to one statement.

Every run takes a PostgreSQL advisory lock on a connection of its own (never a pooled one),
checks the history against the files before anything runs, and applies each migration together
with its history row in one transaction. The lock is released on every path.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import attrs
import psycopg

from persistence.config import Settings
from persistence.connect import build_conninfo, open_connection, server_url
from persistence.errors import (
    MigrationDrift,
    MigrationError,
    MigrationFailed,
    MigrationLockTimeout,
)

__all__ = [
    "AppliedMigration",
    "Migration",
    "MigrationStatus",
    "RunResult",
    "apply",
    "check_history",
    "default_migrations_dir",
    "load_migrations",
    "new_migration",
    "plan_down",
    "plan_up",
    "read_history",
    "rollback",
    "status",
    "verify",
]

logger = logging.getLogger(__name__)

NO_TRANSACTION = "-- persistence:no-transaction"
HISTORY_TABLE = "schema_migrations"
# one key for this runner; advisory locks are per database, so databases never contend
LOCK_KEY = int.from_bytes(hashlib.sha256(b"persistence.migrate").digest()[:8], "big", signed=True)
# Descriptions take letters, digits, "_" and "-" (as sqlx, golang-migrate and dbmate do); they
# start with a letter or digit, so that a name never reads as another version's.
_FILE_NAME = re.compile(
    r"^(?P<version>\d+)_(?P<description>[A-Za-z0-9][A-Za-z0-9_-]*)\.(?P<direction>up|down)\.sql$"
)

Connection = psycopg.Connection[Any]


@attrs.frozen
class Migration:
    """One migration: its up SQL, its down SQL, and the checksum of the up file."""

    version: int
    description: str
    sql: str
    checksum: str
    no_transaction: bool
    path: Path
    down_sql: str | None = None
    down_no_transaction: bool = False
    down_path: Path | None = None


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


@attrs.frozen
class RunResult:
    """What a run did (or, with dry_run, would do)."""

    direction: Literal["up", "down"]
    migrations: tuple[Migration, ...]
    durations_ms: tuple[int, ...] = ()
    dry_run: bool = False


def checksum(data: bytes) -> str:
    """SHA-256 of a file's bytes with CRLF and CR line endings normalised to LF."""
    return hashlib.sha256(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")).hexdigest()


def default_migrations_dir() -> Path:
    """The migrations shipped in the wheel, else the checkout's ``migrations/`` folder."""
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def _read(path: Path) -> tuple[str, bool, bytes]:
    data = path.read_bytes()
    text = data.decode("utf-8")
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    return text, first.lower() == NO_TRANSACTION, data


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every migration in ``directory``, by version; odd file names and gaps in pairs are errors."""
    folder = directory or default_migrations_dir()
    if not folder.is_dir():
        raise MigrationError(
            f"migrations folder {folder} does not exist; pass --migrations-dir or set "
            "PERSISTENCE_MIGRATIONS_DIR"
        )
    found: dict[int, dict[str, Path]] = {}
    names: dict[int, str] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path}: a migration file is named NNNN_description.up.sql or .down.sql, the "
                "description of letters, digits, '_' and '-', starting with a letter or digit"
            )
        version = int(match["version"])
        if names.setdefault(version, match["description"]) != match["description"]:
            raise MigrationError(f"{path}: version {version} is used by two descriptions")
        found.setdefault(version, {})[match["direction"]] = path
    migrations = []
    for version in sorted(found):
        pair = found[version]
        if "up" not in pair:
            raise MigrationError(f"{pair['down']}: has no matching .up.sql file")
        up_text, up_no_tx, up_bytes = _read(pair["up"])
        down_text, down_no_tx, down_path = None, False, pair.get("down")
        if down_path is not None:
            down_text, down_no_tx, _ = _read(down_path)
        migrations.append(
            Migration(
                version=version,
                description=names[version].replace("_", " "),
                sql=up_text,
                checksum=checksum(up_bytes),
                no_transaction=up_no_tx,
                path=pair["up"],
                down_sql=down_text,
                down_no_transaction=down_no_tx,
                down_path=down_path,
            )
        )
    return migrations


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


def _ensure_history_table(conn: Connection) -> None:
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (
            version bigint PRIMARY KEY,
            description text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(),
            execution_ms bigint NOT NULL
        )"""
    )


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

    def record() -> None:
        elapsed = round((time.perf_counter() - start) * 1000)
        if up:
            conn.execute(
                f"INSERT INTO {HISTORY_TABLE} (version, description, checksum, execution_ms) "
                "VALUES (%s, %s, %s, %s)",
                (migration.version, migration.description, migration.checksum, elapsed),
            )
        else:
            conn.execute(f"DELETE FROM {HISTORY_TABLE} WHERE version = %s", (migration.version,))

    try:
        if no_transaction:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (timeout,))
            try:
                conn.execute(sql)
            finally:
                conn.execute("RESET lock_timeout")
            record()
        else:
            with conn.transaction():
                conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
                conn.execute(sql)
                record()
    except psycopg.Error as exc:
        raise _failure(path, sql, exc) from None
    return round((time.perf_counter() - start) * 1000)


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
            _ensure_history_table(conn)
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
    return _run(
        settings,
        migrations_dir,
        "up",
        lambda migrations, applied: plan_up(migrations, applied, target=target),
        dry_run,
    )


def rollback(
    settings: Settings | None = None,
    *,
    migrations_dir: Path | None = None,
    target: int | None = None,
    steps: int | None = None,
    dry_run: bool = False,
) -> RunResult:
    """Revert applied migrations, newest first: to ``target``, or ``steps`` of them (default 1)."""
    return _run(
        settings,
        migrations_dir,
        "down",
        lambda migrations, applied: plan_down(migrations, applied, target=target, steps=steps),
        dry_run,
    )


def status(
    settings: Settings | None = None, *, migrations_dir: Path | None = None
) -> list[MigrationStatus]:
    """Every version known to the files or the history, with its state. Takes no lock."""
    settings = settings or Settings.from_env()
    migrations = _migrations(settings, migrations_dir)
    with open_connection(_conninfo(settings), autocommit=True) as conn:
        applied = {row.version: row for row in read_history(conn)}
    rows = []
    for migration in migrations:
        row = applied.pop(migration.version, None)
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
    for row in applied.values():
        rows.append(
            MigrationStatus(
                row.version, row.description, "missing", row.applied_at, row.execution_ms
            )
        )
    return sorted(rows, key=lambda r: r.version)


def verify(
    settings: Settings | None = None, *, migrations_dir: Path | None = None
) -> list[Migration]:
    """Raise MigrationDrift when history and files disagree; return the pending migrations."""
    settings = settings or Settings.from_env()
    migrations = _migrations(settings, migrations_dir)
    with open_connection(_conninfo(settings), autocommit=True) as conn:
        return plan_up(migrations, read_history(conn))


def new_migration(description: str, *, migrations_dir: Path | None = None) -> tuple[Path, Path]:
    """Create the next numbered up/down pair; returns their paths."""
    slug = re.sub(r"[^a-z0-9]+", "_", description.lower()).strip("_")
    if not slug:
        raise MigrationError("a migration needs a description with letters or digits")
    folder = migrations_dir or Settings.from_env().migrations_dir or default_migrations_dir()
    folder.mkdir(parents=True, exist_ok=True)
    version = max((m.version for m in load_migrations(folder)), default=0) + 1
    up = folder / f"{version:04d}_{slug}.up.sql"
    down = folder / f"{version:04d}_{slug}.down.sql"
    up.write_text(f"-- {description}\n")
    down.write_text(f"-- revert: {description}\n")
    return up, down
