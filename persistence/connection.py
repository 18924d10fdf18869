"""Pooled connections: each wait for the server bounded, and the pool's cheap checkout check.

``DeadlineConnection`` (and its asyncio twin) is the class the pools open: every wait for the
server ends within ``deadline`` seconds, or the statement is cancelled, the connection dropped
and ``OperationTimedOut`` raised. ``pool_check`` / ``async_pool_check`` make the pools' check
hook: no round trip while an idle socket is quiet; when it is not, a probe tells a lost
connection (take another) from a server that is down (``ServerDown``: stop waiting at once).
``watch_replication`` gives a new connection its ``SyncRep``: the server's warning that a
commit was not confirmed by a synchronous standby, which psycopg would drop, is kept there for
the database to raise. No error here is ours yet: ``persistence._translate`` maps them.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import psycopg

# psycopg's own signal that a wait's timeout expired, raised by Connection.wait(gen, interval,
# timeout), which DeadlineConnection overrides. Both are private to psycopg: checked against
# psycopg 3.3.9; tests/test_psycopg_private.py fails loudly if an upgrade changes either.
from psycopg.errors import _WaitTimeout
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from persistence.errors import CommitNotReplicated, DatabaseUnavailable

__all__ = [
    "AsyncDeadlineConnection",
    "DeadlineConnection",
    "OperationTimedOut",
    "ServerDown",
    "SyncRep",
    "async_pool_check",
    "pool_check",
    "watch_replication",
]

logger = logging.getLogger(__name__)

# After a wait timed out, how long the cancel request may take before the connection is dropped.
CANCEL_TIMEOUT = 1.0


class OperationTimedOut(psycopg.OperationalError):
    """The server did not answer within the client-side deadline; the connection was dropped.

    ``committing``: what timed out may have been a commit (see ``SyncRep.in_block``).
    """

    committing = False


def _timed_out(deadline: float, sync_rep: SyncRep | None) -> OperationTimedOut:
    logger.warning("no answer from the server within %g s: dropping the connection", deadline)
    error = OperationTimedOut(f"the server did not answer within {deadline:g} s")
    error.committing = sync_rep is None or not sync_rep.in_block
    return error


# PostgreSQL's WARNING (SQLSTATE 01000) when a commit's wait for a synchronous standby is
# cancelled (a cancel request: pg_cancel_backend, an orchestrator, the client's own cancel):
# the commit stands on this server, and the statement reports success. Its detail: "The
# transaction has already committed locally, but might not have been replicated to the
# standby." The text is matched, so the server's lc_messages must be English (C or en_*).
SYNC_REP_CANCELLED = "canceling wait for synchronous replication"


# After a write found itself stored already (a retry whose first attempt may have committed
# only locally): a commit of ours that waits for the synchronous standby, when the session
# waits for one. WAL is ordered, so a standby that confirmed it holds the earlier commit too.
# A transaction that only takes an xid (pg_current_xact_id()) writes no WAL and does not wait
# (measured); a transactional logical message writes a few bytes, needs no privilege and works
# at wal_level replica. Without synchronous replication it writes nothing: a plain round trip.
CONFIRM = (
    "SELECT CASE WHEN current_setting('synchronous_standby_names') <> '' "
    "AND current_setting('synchronous_commit') NOT IN ('off', 'local') "
    "THEN pg_logical_emit_message(true, 'persistence', 'confirm') END"
)


def not_replicated(target: str, warning: str) -> CommitNotReplicated:
    """Our error for a commit the server (``target``) acknowledged only locally."""
    return CommitNotReplicated(
        f"the write committed on {target}, but no synchronous standby confirmed it "
        f"(the server: {warning}): it may not survive a failover. Retrying it is safe: a "
        "retry reports success only once a standby has confirmed it"
    )


class SyncRep:
    """A connection's synchronous-replication state, read and reset by the database.

    ``unreplicated``: the server's warning that a commit on this connection was not confirmed
    by a synchronous standby (set by the notice handler, ``noticed``). ``confirm``: an
    operation of a transaction block found its write already stored, so the block's commit must
    wait for a standby before success is reported. ``in_block``: a transaction block is open and
    not committing (a statement that times out then cannot have been a commit).
    """

    __slots__ = ("confirm", "in_block", "unreplicated")

    def __init__(self) -> None:
        self.unreplicated: str | None = None
        self.confirm = False
        self.in_block = False

    def noticed(self, diag: psycopg.errors.Diagnostic) -> None:
        message = diag.message_primary or ""
        if diag.sqlstate == "01000" and SYNC_REP_CANCELLED in message:
            self.unreplicated = message

    def note(self, stored: Callable[[Any], bool] | None, result: Any) -> bool:
        """An operation's result: ``stored(result)``, it found its write stored already.
        Whether the database must settle after it: a confirm due, or a commit not replicated."""
        if stored is not None and stored(result):
            self.confirm = True
        return self.confirm or self.unreplicated is not None

    def must_confirm(self) -> bool:
        """Whether ``CONFIRM`` must run now (once: it resets the flag)."""
        confirm, self.confirm = self.confirm, False
        return confirm

    def take(self) -> str | None:
        """The warning of a commit not replicated since the last call, if any; resets all."""
        unreplicated = self.unreplicated
        self.unreplicated, self.confirm, self.in_block = None, False, False
        return unreplicated


def watch_replication(conn: DeadlineConnection | AsyncDeadlineConnection) -> None:
    """Give a new connection its ``SyncRep`` and the notice handler that fills it: once per
    connection; no cost until the server sends a notice."""
    sync_rep = SyncRep()
    conn.add_notice_handler(sync_rep.noticed)
    conn.sync_rep = sync_rep


def _budget(deadline: float) -> tuple[float, float]:
    """The deadline split into the wait for an answer and the cancel request after it."""
    cancel = min(CANCEL_TIMEOUT, deadline / 4)
    return deadline - cancel, cancel


class _Deadline:
    """``deadline`` on a connection: seconds within which each wait ends, or None.

    Setting it precomputes the split into the wait for an answer and the cancel request after
    it, so that the wait itself (on every statement's path) only reads two attributes.
    """

    def __get__(self, conn: Any, owner: Any) -> float | None:
        return None if conn is None else conn._deadline

    def __set__(self, conn: Any, seconds: float | None) -> None:
        conn._deadline = seconds
        conn._answer, conn._cancel = (None, 0.0) if seconds is None else _budget(seconds)


_wait = psycopg.Connection.wait
_await = psycopg.AsyncConnection.wait


class DeadlineConnection(psycopg.Connection[Any]):
    """A connection whose every wait for the server ends within ``deadline`` seconds.

    The server enforces statement_timeout only while it can hear us; a partition or a dead host
    would leave a blocking call waiting forever. On expiry the statement is cancelled (when the
    server can be reached in what is left of the deadline), the connection closed, and
    OperationTimedOut raised.
    """

    deadline = _Deadline()
    _deadline: float | None = None
    _answer: float | None = None
    _cancel = 0.0
    sync_rep: SyncRep  # set by watch_replication, as the pools open it

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        if timeout is not None or self._answer is None:
            return super().wait(gen, interval, timeout)  # psycopg's own bounded waits
        try:
            return _wait(self, gen, interval, self._answer)  # super(), minus building it each call
        except _WaitTimeout:
            with suppress(psycopg.Error):  # unreachable: closing is all that is left
                self.cancel_safe(timeout=self._cancel)
            self.close()
            raise _timed_out(self._deadline or 0, getattr(self, "sync_rep", None)) from None


class AsyncDeadlineConnection(psycopg.AsyncConnection[Any]):
    """``DeadlineConnection`` for asyncio."""

    deadline = _Deadline()
    _deadline: float | None = None
    _answer: float | None = None
    _cancel = 0.0
    sync_rep: SyncRep  # set by watch_replication, as the pools open it

    async def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        if timeout is not None or self._answer is None:
            return await super().wait(gen, interval, timeout)
        try:
            return await _await(self, gen, interval, self._answer)
        except _WaitTimeout:
            with suppress(psycopg.Error):
                await self.cancel_safe(timeout=self._cancel)
            await self.close()
            raise _timed_out(self._deadline or 0, getattr(self, "sync_rep", None)) from None


class ServerDown(BaseException):
    """Raised from the pool's check to stop its wait at once (it re-raises BaseException only)."""

    def __init__(self, error: DatabaseUnavailable) -> None:
        self.error = error


def _stirred(conn: Any) -> bool:
    """Whether an idle connection's socket has something to read.

    It becomes readable when the server closes it (restart, crash, ``pg_terminate_backend``)
    or sends a message; only then is a round trip worth it, so the common path adds none to
    each operation.
    """
    if conn.closed:
        raise psycopg.OperationalError("connection is closed")
    try:  # one poller per connection, made at its first check: its socket never changes
        poller = conn.idle_poller
    except AttributeError:
        poller = conn.idle_poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def _quiet(conn: Any) -> bool:
    """Whether the check passes without a round trip: the connection open, its socket quiet."""
    try:
        return not _stirred(conn)
    except psycopg.Error:
        return False


def pool_check(probe: Callable[[], None]) -> Callable[[psycopg.Connection[Any]], None]:
    """The blocking pool's check hook; ``probe`` raises DatabaseUnavailable when the server is
    down. Its ``quiet`` tells when it would pass without a round trip (``Pool.take_quiet``)."""

    def check(conn: psycopg.Connection[Any]) -> None:
        try:
            if _stirred(conn):
                ConnectionPool.check_connection(conn)
            return
        except psycopg.Error:
            pass
        try:
            probe()  # is it just this connection (terminated), or the server?
        except DatabaseUnavailable as down:
            raise ServerDown(down) from None
        raise psycopg.OperationalError("connection lost")  # the pool takes another

    check.quiet = _quiet  # type: ignore[attr-defined]
    return check


def async_pool_check(
    probe: Callable[[], Awaitable[None]],
) -> Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]:
    """``pool_check`` for the asyncio pool. Its ``quiet`` tells, without a coroutine, when it
    would pass without awaiting anything (``pools.AsyncPool.take_quiet``)."""

    async def check(conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            if _stirred(conn):
                await AsyncConnectionPool.check_connection(conn)
            return
        except psycopg.Error:
            pass
        try:
            await probe()
        except DatabaseUnavailable as down:
            raise ServerDown(down) from None
        raise psycopg.OperationalError("connection lost")

    check.quiet = _quiet  # type: ignore[attr-defined]
    return check
