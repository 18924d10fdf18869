"""Database and AsyncDatabase: a connection pool each, the repositories on it, transactions.

Both run the same operations (``persistence.operations``) through their I/O style's runner
(``persistence.runners``); what differs here is only how a connection is borrowed and given
back. Outside a transaction every operation is one statement in autocommit: one round trip.
While the server is known to be down, operations fail at once with DatabaseUnavailable
instead of waiting for a pooled connection; the first one after it is back succeeds.

psycopg's errors become ours where a connection is borrowed (``_getconn``), and in ``_failed``
for all that runs on a borrowed one (an operation, a block, a savepoint), which also notes a
server that went away or became read-only. A commit acknowledged only locally
(``connection.SyncRep``) raises CommitNotReplicated after the operation or the block's commit
(``_settle``); a write that found itself stored already waits for the standby first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Generic, TypeVar

import psycopg
from psycopg_pool import PoolTimeout, TooManyRequests

from persistence._translate import translate
from persistence.config import Settings
from persistence.connect import (
    build_conninfo,
    describe_target,
    open_async_connection,
    open_connection,
    server_url,
    whole_seconds,
)
from persistence.connection import (
    CONFIRM,
    AsyncDeadlineConnection,
    DeadlineConnection,
    ServerDown,
    async_pool_check,
    not_replicated,
    pool_check,
    watch_replication,
)
from persistence.errors import DatabaseUnavailable, PersistenceError
from persistence.event_store import drivers
from persistence.health import HealthReport, async_health_check, health_check
from persistence.operations import NONE, Operation, Query
from persistence.pools import AsyncPool, Pool
from persistence.repositories import Async, EventStore, M, Sync
from persistence.runners import arun_on, run_on
from persistence.tokens import Keyring, keyring_for
from persistence.transaction import AsyncTransaction, Block, Lending, Repositories, Transaction

__all__ = ["AsyncDatabase", "AsyncTransaction", "Database", "Transaction"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = TypeVar("P", Pool, AsyncPool)

# The pool ends a lost connection's growing retries after this long: the next request starts anew.
RECONNECT_TIMEOUT = 5.0
# Connections lent to user code (transaction blocks) may have changed session settings.
RESET = "RESET ALL"
PING: Query[None] = Query("SELECT 1", fetch=NONE)
# What borrowing a connection may raise: ServerDown comes from the pool's check.
ACQUIRE_ERRORS = (psycopg.Error, PoolTimeout, TooManyRequests, ServerDown)


class _Pooled(Repositories[M], Generic[P, M]):
    """What both databases share: settings, target, repositories, pool state and errors."""

    _pool: P
    event_store: EventStore[M]

    def __init__(self, settings: Settings, conninfo: str, keyring: Keyring | None) -> None:
        self.settings = settings
        self._keyring = keyring
        self.target = describe_target(conninfo)
        self._conninfo = conninfo
        self._server_down = False
        # the event store's project and wait_for, and its notifier (closed with the pool)
        self._bind(self.run, keyring, settings, event_store=EventStore, **drivers(self, conninfo))
        self._lending = Lending(
            self._getconn,
            self._give_back,
            self._run_on,
            self._failed,
            self._settle,
            keyring,
            settings,
            self.event_store.wakeups.poke,
        )

    # each I/O style's own, documented there
    run: Callable[..., Any]
    _getconn: Callable[[], Any]
    _give_back: Callable[[Any], Any]
    _run_on: Callable[[Any, Operation[Any]], Any]
    _settle: Callable[[Any], Any]

    def _pool_options(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "conninfo": self._conninfo,
            "min_size": settings.min_size,
            "max_size": settings.max_size,
            "timeout": settings.acquire_timeout,
            "kwargs": {"autocommit": True, "prepare_threshold": settings.prepare_threshold},
            "reconnect_timeout": RECONNECT_TIMEOUT,
            "name": "persistence",
            "open": False,
        }

    def __repr__(self) -> str:
        state = "closed" if self._pool.closed else "open"
        return f"<{type(self).__name__} {self.target} {state}>"

    @property
    def token_keyring(self) -> Keyring | None:
        """The keyring sealing the Schwab tokens (its ``repr`` shows key ids only), or None."""
        return self._keyring

    @property
    def closed(self) -> bool:
        return self._pool.closed

    @property
    def pool(self) -> P:
        """The psycopg pool, for its statistics. Connections taken from it directly bypass the
        library: leave their session settings as you found them."""
        return self._pool

    def _deadline(self) -> float | None:
        return self.settings.operation_timeout or None

    def _open_failed(self) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"could not open {self.settings.min_size} connection(s) to {self.target} within "
            f"{self.settings.connect_timeout:g} s"
        )

    def _opened(self) -> None:
        logger.info(
            "connected to %s (pool %d..%d)",
            self.target,
            self.settings.min_size,
            self.settings.max_size,
        )

    def _failed(self, conn: Any, exc: psycopg.Error) -> PersistenceError:
        """Our error for one raised on a borrowed connection. A broken one marks the server down
        (the next call probes it, not the pool); one on a read-only server is dropped."""
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and conn.broken:
            self._server_down = True
        elif isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            conn.pgconn.finish()  # the pool discards it (sync or async: libpq's own close)
        return translate(exc)


def _prepare(url: str | None, settings: dict[str, Any]) -> Settings:
    if url is not None:
        settings["url"] = url
    return Settings.from_env(**settings)


class Database(_Pooled[Pool, Sync]):
    """A connection pool to one PostgreSQL database, with the repositories on it."""

    def __init__(self, settings: Settings, conninfo: str, keyring: Keyring | None = None) -> None:
        super().__init__(settings, conninfo, keyring)
        self._pool = Pool(
            connection_class=DeadlineConnection,
            check=pool_check(partial(self._probe, settings.connect_timeout)),
            configure=self._configure,
            **self._pool_options(),
        )

    @classmethod
    def connect(cls, url: str | None = None, *, wait: float = 0.0, **settings: Any) -> Database:
        """Open a pool on ``url`` (default ``DATABASE_URL``, else the embedded server).

        ``wait`` is how long to keep retrying a server that is still starting (with backoff and a
        log line per attempt); 0 fails at once with :class:`DatabaseUnavailable`.
        """
        config = _prepare(url, settings)
        keyring = keyring_for(config)  # a bad key fails here, before any connection
        conninfo = build_conninfo(config, server_url(config))
        # one direct connection first: the real reason (refused, auth...), not only in the log
        open_connection(conninfo, wait=wait).close()
        db = cls(config, conninfo, keyring)
        try:
            db._pool.open(wait=True, timeout=config.connect_timeout + 1)
        except PoolTimeout:
            db._pool.close(timeout=0)
            raise db._open_failed() from None
        db._opened()
        return db

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool. Safe to call twice.

        Operations already running finish; their connections are closed as they come back.
        """
        self.event_store.wakeups.close()
        self._pool.close(timeout=timeout)

    def _configure(self, conn: DeadlineConnection) -> None:
        conn.deadline = self._deadline()
        watch_replication(conn)

    def _probe(self, wait: float) -> None:
        """Raise DatabaseUnavailable unless a new connection succeeds within about ``wait`` s."""
        try:
            open_connection(self._conninfo, connect_timeout=whole_seconds(wait)).close()
        except DatabaseUnavailable:
            self._server_down = True
            raise
        self._server_down = False

    def _getconn(self, timeout: float | None = None) -> DeadlineConnection:
        """A pooled connection within ``timeout`` (default: the acquire timeout), or our error.

        While the server is known to be down, a probe fails at once instead of waiting.
        """
        wait = self.settings.acquire_timeout if timeout is None else timeout
        try:
            if self._server_down:
                self._probe(wait)
            return self._pool.getconn(timeout=wait)  # type: ignore[no-any-return]
        except ACQUIRE_ERRORS as exc:
            raise translate(exc, acquire_timeout=wait) from None

    def run(self, op: Operation[T], *, timeout: float | None = None) -> T:
        """Run one operation (``persistence.operations``) on a pooled connection, in autocommit
        unless it is atomic, and return its result; our errors only.

        ``timeout`` bounds both the wait for a connection and each wait for the server (default:
        the acquire and operation timeouts). For extensions: the repositories are this, bound.
        """
        conn = (None if self._server_down else self._pool.take_quiet()) or self._getconn(timeout)
        if timeout is not None:
            conn.deadline = timeout
        try:
            result: T = run_on(conn, op)
            if conn.sync_rep.note(op.stored, result):
                self._settle(conn)
            return result
        except psycopg.Error as exc:
            raise self._failed(conn, exc) from None
        finally:
            if timeout is not None:
                conn.deadline = self._deadline()
            conn.sync_rep.take()
            self._pool.putconn(conn)

    _run = run  # the name the test suite and the benchmarks call

    def _run_on(self, conn: DeadlineConnection, op: Operation[T]) -> T:
        """Run ``op`` on a connection borrowed by a transaction block."""
        try:
            result: T = run_on(conn, op)
        except psycopg.Error as exc:
            raise self._failed(conn, exc) from None
        conn.sync_rep.note(op.stored, result)
        return result

    def _settle(self, conn: DeadlineConnection) -> None:
        """After a commit (an operation's, or a block's): wait for the standby if a write found
        itself stored (``CONFIRM``), then raise CommitNotReplicated if the server said a commit
        was not replicated."""
        if conn.sync_rep.must_confirm():
            self._run_on(conn, Query(CONFIRM, fetch=NONE))
        if (warning := conn.sync_rep.take()) is not None:
            raise not_replicated(self.target, warning)

    def ping(self) -> float:
        """One round trip to the server; returns its duration in seconds."""
        start = time.perf_counter()
        self.run(PING)
        return time.perf_counter() - start

    def transaction(self) -> Block[Sync]:
        """A block whose operations share one connection: commit on exit, roll back on error.

        Nest with ``tx.transaction()`` for a savepoint. The connection goes back to the pool
        with its session settings reset, whatever the block SET.
        """
        return Block(self._lending)

    def _give_back(self, conn: DeadlineConnection) -> None:
        """Return a connection lent to user code, its session settings reset."""
        conn.sync_rep.take()
        try:
            if not conn.broken:
                conn.execute(RESET)
        except psycopg.Error:
            conn.close()
        self._pool.putconn(conn)

    def health_check(self, *, timeout: float = 2.0) -> HealthReport:
        """Report on the database; never raises, returns within about ``timeout`` seconds."""
        return health_check(self, timeout=timeout)


class AsyncDatabase(_Pooled[AsyncPool, Async]):
    """``Database`` for asyncio: the same operations, settings and errors, each awaited."""

    def __init__(self, settings: Settings, conninfo: str, keyring: Keyring | None = None) -> None:
        super().__init__(settings, conninfo, keyring)
        self._pool = AsyncPool(
            connection_class=AsyncDeadlineConnection,
            check=async_pool_check(partial(self._probe, settings.connect_timeout)),
            configure=self._configure,
            **self._pool_options(),
        )

    @classmethod
    async def connect(
        cls, url: str | None = None, *, wait: float = 0.0, **settings: Any
    ) -> AsyncDatabase:
        """Open a pool on ``url``; the same arguments and defaults as ``Database.connect``."""
        config = _prepare(url, settings)
        # reading a key file, or starting the embedded server, blocks: keep it off the loop
        keyring = await asyncio.to_thread(keyring_for, config)
        conninfo = build_conninfo(config, await asyncio.to_thread(server_url, config))
        await (await open_async_connection(conninfo, wait=wait)).close()
        db = cls(config, conninfo, keyring)
        try:
            await db._pool.open(wait=True, timeout=config.connect_timeout + 1)
        except PoolTimeout:
            await db._pool.close(timeout=0)
            raise db._open_failed() from None
        db._opened()
        return db

    async def __aenter__(self) -> AsyncDatabase:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool. Safe to call twice."""
        await self.event_store.wakeups.close()
        await self._pool.close(timeout=timeout)

    async def _configure(self, conn: AsyncDeadlineConnection) -> None:
        conn.deadline = self._deadline()
        watch_replication(conn)

    async def _probe(self, wait: float) -> None:
        try:
            await (
                await open_async_connection(self._conninfo, connect_timeout=whole_seconds(wait))
            ).close()
        except DatabaseUnavailable:
            self._server_down = True
            raise
        self._server_down = False

    async def _getconn(self, timeout: float | None = None) -> AsyncDeadlineConnection:
        wait = self.settings.acquire_timeout if timeout is None else timeout
        try:
            if self._server_down:
                await self._probe(wait)
            return await self._pool.getconn(timeout=wait)  # type: ignore[no-any-return]
        except ACQUIRE_ERRORS as exc:
            raise translate(exc, acquire_timeout=wait) from None

    async def run(self, op: Operation[T], *, timeout: float | None = None) -> T:
        """``Database.run`` for asyncio: ``await db.run(op, timeout=...)``."""
        taken = None if self._server_down else self._pool.take_quiet()  # no coroutine
        conn = taken or await self._getconn(timeout)
        if timeout is not None:
            conn.deadline = timeout
        try:
            result: T = await arun_on(conn, op)
            if conn.sync_rep.note(op.stored, result):
                await self._settle(conn)
            return result
        except psycopg.Error as exc:
            raise self._failed(conn, exc) from None
        finally:
            if timeout is not None:
                conn.deadline = self._deadline()
            conn.sync_rep.take()
            if not self._pool.give_back(conn):
                await self._pool.putconn(conn)

    _run = run  # the name the test suite and the benchmarks call

    async def _run_on(self, conn: AsyncDeadlineConnection, op: Operation[T]) -> T:
        try:
            result: T = await arun_on(conn, op)
        except psycopg.Error as exc:
            raise self._failed(conn, exc) from None
        conn.sync_rep.note(op.stored, result)
        return result

    async def _settle(self, conn: AsyncDeadlineConnection) -> None:
        """``Database._settle`` for asyncio."""
        if conn.sync_rep.must_confirm():
            await self._run_on(conn, Query(CONFIRM, fetch=NONE))
        if (warning := conn.sync_rep.take()) is not None:
            raise not_replicated(self.target, warning)

    async def ping(self) -> float:
        """One round trip to the server; returns its duration in seconds."""
        start = time.perf_counter()
        await self.run(PING)
        return time.perf_counter() - start

    def transaction(self) -> Block[Async]:
        """``Database.transaction`` for asyncio: ``async with db.transaction() as tx``."""
        return Block(self._lending)

    async def _give_back(self, conn: AsyncDeadlineConnection) -> None:
        # shielded: a caller cancelled meanwhile (its timeout) goes on at once, and the RESET
        # and the return still happen; cancelled inside them, the connection was lost to the
        # pool for good, and enough of those emptied it (found by a probe)
        await asyncio.shield(self._reset_and_return(conn))

    async def _reset_and_return(self, conn: AsyncDeadlineConnection) -> None:
        conn.sync_rep.take()
        try:
            if not conn.broken:
                await conn.execute(RESET)
        except psycopg.Error:
            await conn.close()
        await self._pool.putconn(conn)

    async def health_check(self, *, timeout: float = 2.0) -> HealthReport:
        """Report on the database; never raises, returns within about ``timeout`` seconds."""
        return await async_health_check(self, timeout=timeout)
