"""Mapping of psycopg's and the pool's exceptions to ours, so that none escapes the public API."""

from __future__ import annotations

import re
from collections.abc import Callable

import psycopg
from psycopg import errors as pg
from psycopg_pool import PoolTimeout, TooManyRequests

from persistence.config import redact
from persistence.connection import OperationTimedOut, ServerDown
from persistence.errors import (
    ConcurrencyConflict,
    Conflict,
    DatabaseUnavailable,
    PersistenceError,
    ValidationError,
)

__all__ = ["translate"]

_VALIDATION = (
    pg.CheckViolation,
    pg.NotNullViolation,
    pg.NumericValueOutOfRange,
    pg.InvalidTextRepresentation,
    pg.InvalidDatetimeFormat,
    pg.StringDataRightTruncation,
    pg.DataError,
)

_TIMED_OUT = (
    "{}: the network or the server is down (PERSISTENCE_OPERATION_TIMEOUT bounds each wait). "
    "The statement was cancelled where the server could be reached and the connection dropped; "
    "a write may or may not have landed, and retrying it is safe"
)
# added when what timed out may have been a commit (an operation outside a block, or a block's
# COMMIT): a commit waiting for a missing synchronous standby waits past statement_timeout
_TIMED_OUT_COMMITTING = (
    ". If the server waits for a synchronous standby (synchronous_standby_names), a missing "
    "standby ends here too: the write may be committed on this server but not replicated, and "
    "a failover may lose it; a retry reports success only once a standby has confirmed it"
)
_IDLE_IN_TRANSACTION = (
    "the transaction sat idle longer than the idle-in-transaction timeout "
    "(PERSISTENCE_IDLE_IN_TRANSACTION_TIMEOUT), so the server ended the session and rolled the "
    "transaction back: nothing of the block was written. Keep slow work (broker calls, sleeps) "
    "outside transaction blocks, or raise the setting"
)
_NO_CONNECTION = (
    "no database connection became free{}: the pool is exhausted or the server is down; raise "
    "PERSISTENCE_POOL_MAX_SIZE or PERSISTENCE_POOL_TIMEOUT, or find what holds connections"
)


def _sequence_clash(exc: psycopg.Error) -> ConcurrencyConflict | None:
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


# Rules that look past the class (a constraint, a detail), tried in order before the table:
# each returns our error, or None to pass.
_BY_RULE: tuple[Callable[[psycopg.Error], PersistenceError | None], ...] = (_sequence_clash,)

# The rest, first match wins: what psycopg raised, our class, and the message around psycopg's
# first line (its constraint named, passwords redacted).
_Kinds = type[psycopg.Error] | tuple[type[psycopg.Error], ...]
_BY_CLASS: tuple[tuple[_Kinds, type[PersistenceError], str], ...] = (
    (
        pg.QueryCanceled,
        DatabaseUnavailable,
        "the statement was cancelled: {}; raise PERSISTENCE_STATEMENT_TIMEOUT if the work is "
        "legitimately slow",
    ),
    (pg.LockNotAvailable, DatabaseUnavailable, "a lock was not granted in time: {}"),
    (
        pg.ReadOnlySqlTransaction,
        DatabaseUnavailable,
        "the server is read-only: {}. It is a standby: a primary being demoted in a failover "
        "(nothing was written, the connection was dropped, and a retry goes where writes go "
        "now), or a handle for reads (a replica's URL): write through the primary's",
    ),
    (
        # before OperationalError, their base class; rolled back, so retrying is safe, as for
        # any DatabaseUnavailable: never a Conflict, which a caller may read as "stored already"
        (pg.SerializationFailure, pg.DeadlockDetected),
        DatabaseUnavailable,
        "a concurrent transaction got in the way and the server rolled this one back: {}; "
        "nothing of it was written, retry it",
    ),
    (
        (psycopg.OperationalError, psycopg.InterfaceError),
        DatabaseUnavailable,
        "the database connection failed: {}; a write under way may have landed before it "
        "failed, and retrying it is safe (every write is idempotent)",
    ),
    (
        (pg.UniqueViolation, pg.ExclusionViolation, pg.ForeignKeyViolation),
        Conflict,
        "conflicts with a stored row: {}",
    ),
    (_VALIDATION, ValidationError, "the database refused a value: {}"),
    (
        pg.InvalidSqlStatementName,
        PersistenceError,
        "database error: {}; behind PgBouncer in transaction mode (before 1.21), set "
        "PERSISTENCE_PREPARE_THRESHOLD=none",
    ),
    (psycopg.Error, PersistenceError, "database error: {}"),
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


def translate(exc: BaseException, *, acquire_timeout: float | None = None) -> PersistenceError:
    """Our exception for a psycopg or pool exception (or the pool check's ServerDown)."""
    if isinstance(exc, ServerDown):
        return exc.error
    if isinstance(exc, OperationTimedOut):
        committing = _TIMED_OUT_COMMITTING if exc.committing else ""
        return DatabaseUnavailable(_TIMED_OUT.format(exc) + committing)
    if _idle_in_transaction_timeout(exc):
        return DatabaseUnavailable(_IDLE_IN_TRANSACTION)
    if isinstance(exc, PoolTimeout | TooManyRequests):
        waited = f" within {acquire_timeout:g} s" if acquire_timeout is not None else ""
        return DatabaseUnavailable(_NO_CONNECTION.format(waited))
    if isinstance(exc, psycopg.Error):
        for rule in _BY_RULE:
            if (error := rule(exc)) is not None:
                return error
        for kinds, ours, message in _BY_CLASS:
            if isinstance(exc, kinds):
                return ours(message.format(_describe(exc)))
    raise TypeError(f"not a database error: {exc!r}")
