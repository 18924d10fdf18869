"""Health check: is the database reachable, fast, on the newest schema, and is the pool well?

``health_check`` never raises and never waits past its timeout. It does not queue behind a full
pool: when no connection is free it reports that instead.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from persistence.config import redact
from persistence.errors import MigrationDrift, PersistenceError
from persistence.migrate import (
    AppliedMigration,
    Migration,
    check_history,
    default_migrations_dir,
    load_migrations,
)
from persistence.operations import ALL, Query, Step, Steps

if TYPE_CHECKING:  # the databases import this module; it needs them only for their types
    from persistence.database import AsyncDatabase, Database

__all__ = ["HealthReport", "Status", "async_health_check", "health_check"]

Status = Literal["healthy", "degraded", "unhealthy"]

# One round trip: server facts and, when the history table exists, the applied versions.
# role: a standby is in recovery. Its lag: how far its replay is behind what it received
# (bytes), and how old the last transaction it replayed is (seconds; it grows on an idle
# primary too, so read it with the bytes).
_SERVER_FACTS = (
    "SELECT current_setting('server_version'), current_database(), "
    "to_regclass('schema_migrations') IS NOT NULL, pg_is_in_recovery(), "
    "host(inet_server_addr()) || ':' || inet_server_port(), "
    "CASE WHEN pg_is_in_recovery() THEN pg_wal_lsn_diff(pg_last_wal_receive_lsn(), "
    "pg_last_wal_replay_lsn())::bigint END, "
    "CASE WHEN pg_is_in_recovery() THEN "
    "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END"
)
_HISTORY = "SELECT version, checksum FROM schema_migrations ORDER BY version"


@attrs.frozen
class HealthReport:
    """The state of the database as seen by this process."""

    status: Status
    checked_at: datetime
    latency_ms: float | None = None
    server_version: str | None = None
    database: str | None = None
    schema_version: int | None = None
    latest_migration: int | None = None
    pending_migrations: int | None = None
    drift: tuple[str, ...] = ()
    pool: dict[str, int] = attrs.field(factory=dict)
    error: str | None = None
    # which server answered ("host:port"; None over a unix socket), and whether it is the
    # primary or a standby; on a standby, how far behind its replay is
    server: str | None = None
    role: Literal["primary", "standby"] | None = None
    replay_lag_bytes: int | None = None
    replay_lag_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["checked_at"] = self.checked_at.isoformat()
        data["drift"] = list(self.drift)
        return data


@cache
def _shipped(directory: Path) -> tuple[Migration, ...]:
    return tuple(load_migrations(directory))


def _waiting_now(db: Database | AsyncDatabase, reported: int) -> int:
    """The requests waiting for a connection now.

    psycopg_pool's ``requests_waiting`` is the length of its queue of waiters, and a waiter
    that timed out stays queued until a returned connection is offered to it (and refused):
    on an exhausted pool it is counted long after it gave up. A waiter still waiting has
    neither a connection nor an error yet.

    ``_waiting`` (a deque of WaitingClient, with ``conn`` and ``error``) is private to
    psycopg_pool: checked against psycopg_pool 3.3.3; tests/test_psycopg_private.py fails
    loudly if an upgrade changes its shape.
    """
    queue = getattr(db.pool, "_waiting", None)
    if queue is None:  # another psycopg_pool: its own figure
        return reported
    try:
        # tuple() copies the deque without running Python code, so no thread mutates it midway
        waiters = tuple(queue)
    except RuntimeError:
        return reported
    return sum(
        1
        for waiter in waiters
        if getattr(waiter, "conn", None) is None and getattr(waiter, "error", None) is None
    )


def _pool_figures(db: Database | AsyncDatabase) -> dict[str, int]:
    stats = db.pool.get_stats()
    return {
        "size": stats.get("pool_size", 0),
        "idle": stats.get("pool_available", 0),
        "waiting": _waiting_now(db, stats.get("requests_waiting", 0)),
        "max_size": db.settings.max_size,
        "connection_errors": stats.get("connections_errors", 0),
        "timeouts": stats.get("requests_errors", 0),
    }


Facts = tuple[str, str, list[tuple[int, str]], tuple[Any, ...]]


def _server_facts(timeout: float) -> Steps[Facts]:
    """One transaction: the server's facts and the applied migrations, bounded on the server too."""
    return Steps(_facts(timeout))


def _facts(timeout: float) -> Generator[Step, Any, Facts]:
    # the server-side limit keeps a stuck server from holding us past the timeout
    yield Query(
        "SELECT set_config('statement_timeout', %s, true)",
        (f"{max(1, round(timeout * 1000))}ms",),
    )
    version, database, has_history, *replication = yield Query(_SERVER_FACTS)
    applied = (yield Query(_HISTORY, fetch=ALL)) if has_history else []
    return version, database, applied, tuple(replication)


def _before(db: Database | AsyncDatabase, now: datetime) -> HealthReport | None:
    """The report that needs no round trip: a closed database or an exhausted pool."""
    pool = _pool_figures(db)
    if db.closed:
        return HealthReport("unhealthy", now, pool=pool, error="the Database is closed")
    if pool["idle"] == 0 and pool["size"] >= pool["max_size"]:
        return HealthReport(
            "degraded",
            now,
            pool=pool,
            error=f"the pool is exhausted: {pool['size']} connections busy, "
            f"{pool['waiting']} requests waiting",
        )
    return None


def _failed(db: Database | AsyncDatabase, now: datetime, exc: Exception) -> HealthReport:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, PersistenceError):
        reason = f"{type(exc).__name__}: {reason}"
    return HealthReport("unhealthy", now, pool=_pool_figures(db), error=redact(reason))


def _report(
    db: Database | AsyncDatabase,
    now: datetime,
    facts: Facts,
    latency_ms: float,
) -> HealthReport:
    version, database, applied, (in_recovery, server, lag_bytes, lag_seconds) = facts
    migrations = _shipped(db.settings.migrations_dir or default_migrations_dir())
    history = [AppliedMigration(v, c) for v, c in applied]
    drift: tuple[str, ...] = ()
    try:
        check_history(migrations, history)
    except MigrationDrift as exc:
        drift = tuple(line.strip() for line in str(exc).splitlines()[1:])
    done = {row.version for row in history}
    pending = sum(1 for m in migrations if m.version not in done)
    status: Status = "degraded" if pending or drift else "healthy"
    return HealthReport(
        status,
        now,
        latency_ms=round(latency_ms, 3),
        server_version=version,
        database=database,
        schema_version=max(done, default=None),
        latest_migration=max((m.version for m in migrations), default=None),
        pending_migrations=pending,
        drift=drift,
        pool=_pool_figures(db),
        error=f"{pending} migration(s) pending" if pending and not drift else None,
        server=server,
        role="standby" if in_recovery else "primary",
        replay_lag_bytes=lag_bytes,
        replay_lag_seconds=None if lag_seconds is None else round(lag_seconds, 3),
    )


def health_check(db: Database, *, timeout: float = 2.0) -> HealthReport:
    """Report on ``db``; never raises, and returns within about ``timeout`` seconds."""
    now = datetime.now(UTC)
    if (early := _before(db, now)) is not None:
        return early
    start = time.perf_counter()
    try:
        facts = db.run(_server_facts(timeout), timeout=timeout)
    except Exception as exc:  # a health check reports; it never raises
        return _failed(db, now, exc)
    return _report(db, now, facts, (time.perf_counter() - start) * 1000)


async def async_health_check(db: AsyncDatabase, *, timeout: float = 2.0) -> HealthReport:
    """``health_check`` for an AsyncDatabase."""
    now = datetime.now(UTC)
    if (early := _before(db, now)) is not None:
        return early
    start = time.perf_counter()
    try:
        facts = await db.run(_server_facts(timeout), timeout=timeout)
    except Exception as exc:
        return _failed(db, now, exc)
    return _report(db, now, facts, (time.perf_counter() - start) * 1000)
