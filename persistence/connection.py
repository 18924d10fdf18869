"""Pooled connections: each wait for the server bounded, and the pool's cheap checkout check.

``DeadlineConnection`` (and its asyncio twin) is the class the pools open: every wait for the
server ends within ``deadline`` seconds, or the statement is cancelled, the connection dropped
and ``OperationTimedOut`` raised. ``pool_check`` / ``async_pool_check`` make the pools' check
hook: no round trip while an idle socket is quiet; when it is not, a probe tells a lost
connection (take another) from a server that is down (``ServerDown``: stop waiting at once).
No error here is ours yet: ``persistence._translate`` maps them.
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

from persistence.errors import DatabaseUnavailable

__all__ = [
    "AsyncDeadlineConnection",
    "DeadlineConnection",
    "OperationTimedOut",
    "ServerDown",
    "async_pool_check",
    "pool_check",
]

logger = logging.getLogger(__name__)

# After a wait timed out, how long the cancel request may take before the connection is dropped.
CANCEL_TIMEOUT = 1.0


class OperationTimedOut(psycopg.OperationalError):
    """The server did not answer within the client-side deadline; the connection was dropped."""


def _timed_out(deadline: float) -> OperationTimedOut:
    logger.warning("no answer from the server within %g s: dropping the connection", deadline)
    return OperationTimedOut(f"the server did not answer within {deadline:g} s")


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

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        if timeout is not None or self._answer is None:
            return super().wait(gen, interval, timeout)  # psycopg's own bounded waits
        try:
            return super().wait(gen, interval, self._answer)
        except _WaitTimeout:
            with suppress(psycopg.Error):  # unreachable: closing is all that is left
                self.cancel_safe(timeout=self._cancel)
            self.close()
            raise _timed_out(self._deadline or 0) from None


class AsyncDeadlineConnection(psycopg.AsyncConnection[Any]):
    """``DeadlineConnection`` for asyncio."""

    deadline = _Deadline()
    _deadline: float | None = None
    _answer: float | None = None
    _cancel = 0.0

    async def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        if timeout is not None or self._answer is None:
            return await super().wait(gen, interval, timeout)
        try:
            return await super().wait(gen, interval, self._answer)
        except _WaitTimeout:
            with suppress(psycopg.Error):
                await self.cancel_safe(timeout=self._cancel)
            await self.close()
            raise _timed_out(self._deadline or 0) from None


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
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def pool_check(probe: Callable[[], None]) -> Callable[[psycopg.Connection[Any]], None]:
    """The blocking pool's check hook; ``probe`` raises DatabaseUnavailable when the server is
    down."""

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

    return check


def async_pool_check(
    probe: Callable[[], Awaitable[None]],
) -> Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]:
    """``pool_check`` for the asyncio pool."""

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

    return check
