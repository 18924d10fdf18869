"""Mapping of psycopg's exceptions to ours, so that none escapes the public API."""

from __future__ import annotations

import re
import select
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg
from psycopg_pool import ConnectionPool, PoolTimeout, TooManyRequests

from persistence.config import redact
from persistence.errors import (
    ConcurrencyConflict,
    Conflict,
    DatabaseUnavailable,
    PersistenceError,
    ValidationError,
)

_VALIDATION = (
    pg.CheckViolation,
    pg.NotNullViolation,
    pg.NumericValueOutOfRange,
    pg.InvalidTextRepresentation,
    pg.InvalidDatetimeFormat,
    pg.StringDataRightTruncation,
    pg.DataError,
)


def _describe(exc: psycopg.Error) -> str:
    text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    constraint = getattr(exc.diag, "constraint_name", None) if hasattr(exc, "diag") else None
    return f"{text} (constraint {constraint})" if constraint and constraint not in text else text


# PostgreSQL's message when idle_in_transaction_session_timeout ends a session; a proxy or a
# connection closed before the FATAL was read may pass on the text without its SQLSTATE
_IDLE_IN_TRANSACTION_TEXT = "idle-in-transaction timeout"


def _idle_in_transaction_timeout(exc: BaseException) -> bool:
    """Whether the server ended the session for sitting idle inside a transaction (25P03)."""
    if isinstance(exc, pg.IdleInTransactionSessionTimeout):
        return True
    return isinstance(exc, psycopg.Error) and _IDLE_IN_TRANSACTION_TEXT in str(exc)


class OperationTimedOut(psycopg.OperationalError):
    """The server did not answer within the client-side deadline; the connection was dropped."""


def _sequence_clash(exc: BaseException) -> ConcurrencyConflict | None:
    """A real sequence clash: a unique violation on events_pkey (the event store's appends),
    and nothing else. append_events() puts the aggregate's actual last sequence in the detail;
    a clash of some other writer's INSERT has none (actual_sequence is then None)."""
    if not isinstance(exc, pg.UniqueViolation) or exc.diag.constraint_name != "events_pkey":
        return None
    found = re.fullmatch(r"actual_sequence=(\d+)", exc.diag.message_detail or "")
    actual = int(found.group(1)) if found else None
    return ConcurrencyConflict(
        f"a concurrent append to the aggregate won the race (its last sequence is now {actual});"
        " nothing was written: reload it and decide again",
        actual,
    )


def translate(exc: BaseException, *, acquire_timeout: float | None = None) -> PersistenceError:
    """Our exception for a psycopg or pool exception."""
    if isinstance(exc, OperationTimedOut):
        return DatabaseUnavailable(
            f"{exc}: the network or the server is down (PERSISTENCE_OPERATION_TIMEOUT bounds "
            "each wait). The statement was cancelled where the server could be reached and the "
            "connection dropped; a write may or may not have landed, and retrying it is safe"
        )
    if _idle_in_transaction_timeout(exc):
        return DatabaseUnavailable(
            "the transaction sat idle longer than the idle-in-transaction timeout "
            "(PERSISTENCE_IDLE_IN_TRANSACTION_TIMEOUT), so the server ended the session and "
            "rolled the transaction back: nothing of the block was written. Keep slow work "
            "(broker calls, sleeps) outside transaction blocks, or raise the setting"
        )
    if isinstance(exc, PoolTimeout | TooManyRequests):
        waited = f" within {acquire_timeout:g} s" if acquire_timeout is not None else ""
        return DatabaseUnavailable(
            f"no database connection became free{waited}: the pool is exhausted or the server "
            "is down; raise PERSISTENCE_POOL_MAX_SIZE or PERSISTENCE_POOL_TIMEOUT, or find what "
            "holds connections"
        )
    if isinstance(exc, pg.QueryCanceled):
        return DatabaseUnavailable(
            f"the statement was cancelled: {_describe(exc)}; raise PERSISTENCE_STATEMENT_TIMEOUT "
            "if the work is legitimately slow"
        )
    if isinstance(exc, pg.LockNotAvailable):
        return DatabaseUnavailable(f"a lock was not granted in time: {_describe(exc)}")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailable(
            f"the database connection failed: {_describe(exc)}; a write under way may have "
            "landed before it failed, and retrying it is safe (every write is idempotent)"
        )
    if (clash := _sequence_clash(exc)) is not None:
        return clash
    if isinstance(exc, pg.UniqueViolation | pg.ExclusionViolation | pg.ForeignKeyViolation):
        return Conflict(f"conflicts with a stored row: {_describe(exc)}")
    if isinstance(exc, pg.SerializationFailure | pg.DeadlockDetected):
        return Conflict(f"concurrent update, retry the transaction: {_describe(exc)}")
    if isinstance(exc, _VALIDATION):
        return ValidationError(f"the database refused a value: {_describe(exc)}")
    if isinstance(exc, pg.InvalidSqlStatementName):
        return PersistenceError(
            f"database error: {_describe(exc)}; behind PgBouncer in transaction mode (before "
            "1.21), set PERSISTENCE_PREPARE_THRESHOLD=none"
        )
    if isinstance(exc, psycopg.Error):
        return PersistenceError(f"database error: {_describe(exc)}")
    raise TypeError(f"not a database error: {exc!r}")


@contextmanager
def translating(acquire_timeout: float | None = None) -> Iterator[None]:
    """Re-raise psycopg and pool errors as ours; everything else passes untouched."""
    try:
        yield
    except (psycopg.Error, PoolTimeout, TooManyRequests) as exc:
        raise translate(exc, acquire_timeout=acquire_timeout) from None


def check_idle_connection(conn: Any, full_check: Callable[[Any], Any] | None = None) -> Any:
    """Pool checkout check: a round trip only when the idle socket has something to read.

    An idle connection's socket becomes readable when the server closes it (restart, crash,
    ``pg_terminate_backend``) or sends a message; only then is it worth a full check, so the
    common path adds no round trip to each operation. Returns what ``full_check`` returns (an
    awaitable for the async pool's check), or None when the socket is quiet.
    """
    if conn.closed:
        raise psycopg.OperationalError("connection is closed")
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    if poller.poll(0):
        return (full_check or ConnectionPool.check_connection)(conn)
    return None
