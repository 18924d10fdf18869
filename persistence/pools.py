"""The pools the databases open: psycopg_pool's, with a short path for the common case.

A point operation borrows a connection and gives it back on every call. psycopg_pool's
``getconn`` and ``putconn`` take about twenty Python calls for it (a retry loop, logging, the
waiting queue, the reset hook): 36,600 instructions with the check, a quarter of a raw lookup's
own (``python -m bench.profile_calls --callgrind``, docs/performance.md). When a connection is
idle in the pool and nobody waits, these classes do the same work in a few lines (16,000): the
same state, under the same lock, with the same check hook (``connection.pool_check``) and the
same statistics. Anything else (an empty pool, waiting clients, a failed check, a connection
to discard or roll back, a closed pool) goes through psycopg_pool's own path, unchanged, but
for one thing on asyncio: a task that finds no idle connection queues with a ``_Waiter``, one
future, which a returned connection resolves without a coroutine. Upstream's waiter, a
Condition under ``asyncio.wait_for``, cost 64 tasks inserting on 8 connections about 120,000
of their 600,000 client instructions per insert (docs/performance.md).

The short path lends the connection returned last (psycopg_pool lends the one idle longest):
its server process is awake and its caches warm. Sequential lookups on a pool of 8 took 1.25 x
the time of a pool of 1 when the 8 took turns, 1.01 x this way. The connections left idle at
the far end are the ones psycopg_pool's shrinking closes first.

The state read here is psycopg_pool's private state, checked against psycopg_pool 3.3.3;
``tests/test_psycopg_private.py`` fails loudly if an upgrade changes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from time import monotonic
from typing import Any

from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
from psycopg_pool.pool_async import ReturnConnection

__all__ = ["AsyncPool", "Pool"]

logger = logging.getLogger(__name__)

IDLE = TransactionStatus.IDLE
REQUESTS = ConnectionPool._REQUESTS_NUM


def _reusable(pool: ConnectionPool[Any] | AsyncConnectionPool[Any], conn: Any) -> bool:
    """Whether a returned connection goes straight back: from this pool, idle, not drained, not
    expired, and the pool open with no reset hook (psycopg_pool's own checks, in order)."""
    try:
        mine = conn._pool is pool
    except AttributeError:
        return False  # psycopg_pool's own path says whose it is
    return (
        mine
        and not pool._closed
        and pool._reset is None
        and conn.pgconn.transaction_status == IDLE
        and conn._created_at > pool._drained_at
        and conn._expire_at > monotonic()
    )


def _left(
    pool: ConnectionPool[Any] | AsyncConnectionPool[Any], timeout: float | None, started: float
) -> float:
    """What is left of the wait for a connection after a failed check (which may have probed
    the server): the full path goes on within the caller's timeout, not a fresh one."""
    timeout = pool.timeout if timeout is None else timeout
    left = timeout - (monotonic() - started)
    if left <= 0:
        raise PoolTimeout(f"couldn't get a connection after {timeout:.2f} sec")
    return left


class Pool(ConnectionPool[Any]):
    """``ConnectionPool`` with the short path for an idle connection (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._quiet = getattr(self._check, "quiet", None)

    def take_quiet(self) -> Any:
        """``getconn``'s short path in fewer calls (no timing, no check hook): the connection
        returned last, if the check hook's ``quiet`` says it passes without a round trip
        (``connection.pool_check``: open, its idle socket quiet). None otherwise: the caller
        calls ``getconn``, which takes the same connection and checks it fully."""
        quiet = self._quiet
        if quiet is None:
            return None
        with self._lock:
            idle = self._pool
            if not idle or self._closed:
                return None
            conn = idle.pop()
            if len(idle) < self._nconns_min:
                self._nconns_min = len(idle)
            self._stats[REQUESTS] += 1
        # the check outside the lock: its poll lets other threads run, and 8 threads appending
        # to the event store queued on the lock behind it (about 10 % of their throughput)
        if quiet(conn):
            conn._pool = self
            return conn
        with self._lock:  # back where it was: getconn takes it and checks it fully
            self._stats[REQUESTS] -= 1
            if not self._closed:
                idle.append(conn)
                return None
        conn.close()  # the pool closed meanwhile, as close() does with its idle connections
        return None

    def getconn(self, timeout: float | None = None) -> Any:
        started = monotonic()
        with self._lock:
            idle = self._pool
            conn = idle.pop() if idle and not self._closed else None
            if conn is not None:
                if len(idle) < self._nconns_min:  # as psycopg_pool does it (min() costs more)
                    self._nconns_min = len(idle)
                self._stats[REQUESTS] += 1
        if conn is None:
            return super().getconn(timeout)
        try:
            if self._check is not None:  # psycopg_pool's _check_connection, a call less
                self._check(conn)
        except Exception as exc:
            logger.info("connection failed check: %s", exc)
            self._putconn(conn, from_getconn=True)  # the pool replaces it, as its own path does
            self._stats[REQUESTS] -= 1  # counted again by the full path
            return super().getconn(_left(self, timeout, started))
        except BaseException:
            self._putconn(conn, from_getconn=True)
            raise
        conn._pool = self
        return conn

    def putconn(self, conn: Any) -> None:
        if _reusable(self, conn):
            with self._lock:
                if not (self._waiting or self._closed or self._pool_full_event):
                    conn._pool = None
                    self._pool.append(conn)
                    return
        super().putconn(conn)


class _Waiter:
    """psycopg_pool's ``WaitingClient`` for asyncio, on one future: the same ``conn``, ``error``,
    ``wait``, ``set`` and ``fail``. Upstream's waits on a Condition under ``asyncio.wait_for``
    (a task, a lock taken on each side, several turns of the loop); a hand-off here resolves the
    future, and the returning task can do it without a coroutine (``hand``)."""

    __slots__ = ("_done", "conn", "error")

    def __init__(self) -> None:
        self.conn: Any = None
        self.error: BaseException | None = None
        self._done = asyncio.get_running_loop().create_future()

    async def wait(self, timeout: float) -> Any:
        timer = self._done.get_loop().call_later(timeout, self._expire, timeout)
        try:
            await self._done
        except asyncio.CancelledError as exc:  # a conn handed already goes back: the caller's job
            self.error = exc
            raise
        finally:
            timer.cancel()
        if self.error is not None:
            raise self.error
        return self.conn

    def _expire(self, timeout: float) -> None:
        if not self._done.done():
            self.error = PoolTimeout(f"couldn't get a connection after {timeout:.2f} sec")
            self._done.set_result(None)

    def hand(self, conn: Any) -> bool:
        """Give it ``conn``; False when it stopped waiting (timed out or cancelled)."""
        if self._done.done():
            return False
        self.conn = conn
        self._done.set_result(None)
        return True

    async def set(self, conn: Any) -> bool:
        return self.hand(conn)

    async def fail(self, error: BaseException) -> bool:
        if self._done.done():
            return False
        self.error = error
        self._done.set_result(None)
        return True


class AsyncPool(AsyncConnectionPool[Any]):
    """``AsyncConnectionPool`` with the short path. Nothing between reading the pool's state and
    changing it awaits, so no other task runs in between; while another task holds the pool's
    lock (it may be suspended inside it), the full path waits for it as usual."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._quiet = getattr(self._check, "quiet", None)

    async def getconn(self, timeout: float | None = None) -> Any:
        if self._closed or self._lock.locked() or (self.max_waiting and not self._pool):
            return await super().getconn(timeout)
        started = monotonic()
        self._stats[REQUESTS] += 1
        idle = self._pool
        if idle:
            conn = idle.pop()
            if len(idle) < self._nconns_min:
                self._nconns_min = len(idle)
        else:  # queue for the next connection returned (upstream's getconn, four coroutines less)
            wait = self.timeout if timeout is None else timeout
            try:
                conn = await self._getconn_unchecked(wait)
            except PoolTimeout:
                raise PoolTimeout(f"couldn't get a connection after {wait:.2f} sec") from None
            if self._quiet is not None and self._quiet(conn):
                return conn
        try:
            if self._check is not None:  # psycopg_pool's _check_connection, a coroutine less
                await self._check(conn)
        except Exception as exc:
            logger.info("connection failed check: %s", exc)
            await self._putconn(conn, from_getconn=True)
            self._stats[REQUESTS] -= 1
            return await super().getconn(_left(self, timeout, started))
        except BaseException:
            await self._putconn(conn, from_getconn=True)
            raise
        conn._pool = self
        return conn

    def take_quiet(self) -> Any:
        """``getconn``'s short path without a coroutine, when the check needs no await: the
        connection returned last, if the check hook's ``quiet`` says it passes without a round
        trip (``connection.async_pool_check``: open, its idle socket quiet). None otherwise:
        the caller awaits ``getconn``, which takes the same connection and checks it fully."""
        idle = self._pool
        if not idle or self._closed or self._lock.locked() or self._quiet is None:
            return None
        conn = idle[-1]
        if not self._quiet(conn):
            return None
        idle.pop()
        if len(idle) < self._nconns_min:
            self._nconns_min = len(idle)
        self._stats[REQUESTS] += 1
        conn._pool = self
        return conn

    async def _getconn_unchecked(self, timeout: float) -> Any:
        """psycopg_pool 3.3.3's own, line for line, but for the waiter: a ``_Waiter``."""
        async with self._lock:
            if not (conn := (await self._get_ready_connection(timeout))):
                t0 = monotonic()
                pos = _Waiter()
                queue: deque[Any] = self._waiting  # upstream's WaitingClient or a _Waiter
                queue.append(pos)
                self._stats[self._REQUESTS_QUEUED] += 1
                self._maybe_grow_pool()
        if not conn:
            try:
                conn = await pos.wait(timeout=timeout)
            except (Exception, asyncio.CancelledError):
                if pos.conn:
                    self.run_task(ReturnConnection(self, pos.conn, from_getconn=True))
                self._stats[self._REQUESTS_ERRORS] += 1
                raise
            finally:
                self._stats[self._REQUESTS_WAIT_MS] += int(1000.0 * (monotonic() - t0))
        conn._pool = self
        return conn

    def give_back(self, conn: Any) -> bool:
        """``putconn``'s short path without a coroutine; False: await ``putconn`` instead. With
        tasks waiting, the connection goes to the first still waiting, as upstream's does."""
        if not _reusable(self, conn) or self._pool_full_event or self._lock.locked():
            return False
        waiting: deque[Any] = self._waiting
        if waiting and not isinstance(waiting[0], _Waiter):
            return False  # not queued by _getconn_unchecked: upstream's path serves it
        conn._pool = None
        while waiting:
            if waiting.popleft().hand(conn):
                return True
        self._pool.append(conn)
        return True

    async def putconn(self, conn: Any) -> None:
        if not self.give_back(conn):
            await super().putconn(conn)
