"""Database and AsyncDatabase: a connection pool each, the repositories on it, transactions.

Both run the same operations (``persistence.operations``) through their I/O style's runner
(``persistence.runners``); what differs here is only how a connection is borrowed and given
back. Outside a transaction every operation is one statement in autocommit: one round trip.
While the server is known to be down, operations fail at once with DatabaseUnavailable
instead of waiting for a pooled connection; the first one after it is back succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
from psycopg.errors import _WaitTimeout  # psycopg's own signal that a wait's timeout expired
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout, TooManyRequests

from persistence._translate import OperationTimedOut, check_idle_connection, translate, translating
from persistence.config import Settings
from persistence.connect import (
    build_conninfo,
    describe_target,
    open_async_connection,
    open_connection,
    server_url,
)
from persistence.errors import DatabaseUnavailable
from persistence.event_store import aclose as close_async_event_store
from persistence.event_store import attach as attach_event_store
from persistence.event_store import close as close_event_store
from persistence.event_store import for_transaction as transaction_event_store
from persistence.operations import NONE, Operation, Query
from persistence.repositories import (
    AccumulatorRepository,
    Async,
    Checkpoints,
    EventQueue,
    EventStore,
    ExecutionRepository,
    FillRepository,
    M,
    SchwabAuthRepository,
    Sync,
    TradeRepository,
    TransactionEventQueue,
    TransactionEventStore,
)
from persistence.runners import arun_on, run_on
from persistence.tokens import Keyring, keyring_for

if TYPE_CHECKING:
    from persistence.health import HealthReport

__all__ = ["AsyncDatabase", "AsyncTransaction", "Database", "Transaction"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The pool retries a lost connection with a growing delay; giving up after this many seconds
# lets the next request start a fresh attempt at once, so recovery never waits on a long backoff.
RECONNECT_TIMEOUT = 5.0
# After a wait timed out, how long the cancel request may take before the connection is dropped.
CANCEL_TIMEOUT = 1.0
# Connections lent to user code (transaction blocks) may have changed session settings.
RESET = "RESET ALL"
PING: Query[None] = Query("SELECT 1", fetch=NONE)


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


def _whole(seconds: float) -> int:
    # libpq takes whole seconds and treats anything below 2 as 2
    return max(2, math.ceil(seconds))


class _ServerDown(BaseException):
    """Raised from the pool's check to stop its wait at once (it re-raises BaseException only)."""

    def __init__(self, error: DatabaseUnavailable) -> None:
        self.error = error


P = TypeVar("P", ConnectionPool[Any], AsyncConnectionPool[Any])


class _Pooled(Generic[P]):
    """What both databases share: settings, target, pool state and error handling."""

    _pool: P
    # the pool's hooks, in each subclass's I/O style
    _check: Callable[[Any], Any]
    _configure: Callable[[Any], Any]

    def __init__(self, settings: Settings, conninfo: str, keyring: Keyring | None) -> None:
        self.settings = settings
        self._keyring = keyring
        self.target = describe_target(conninfo)
        self._conninfo = conninfo
        self._server_down = False

    def _pool_options(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "conninfo": self._conninfo,
            "min_size": settings.min_size,
            "max_size": settings.max_size,
            "timeout": settings.acquire_timeout,
            "kwargs": {"autocommit": True, "prepare_threshold": settings.prepare_threshold},
            "check": self._check,
            "configure": self._configure,
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

    def _acquire_failed(self, exc: BaseException, wait: float) -> BaseException:
        if isinstance(exc, _ServerDown):
            return exc.error
        return translate(exc, acquire_timeout=wait)

    def _failed(self, conn: Any, exc: psycopg.Error) -> BaseException:
        """Our error for a failed operation; notes a server that went away."""
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and conn.broken:
            self._server_down = True
        return translate(exc)

    def _wait(self, timeout: float | None) -> float:
        return self.settings.acquire_timeout if timeout is None else timeout


ACQUIRE_ERRORS = (psycopg.Error, PoolTimeout, TooManyRequests, _ServerDown)


def _run_translated(conn: psycopg.Connection[Any], op: Operation[T]) -> T:
    with translating():
        return run_on(conn, op)  # type: ignore[no-any-return]


async def _arun_translated(conn: psycopg.AsyncConnection[Any], op: Operation[T]) -> T:
    with translating():
        return await arun_on(conn, op)  # type: ignore[no-any-return]


class Transaction(Generic[M]):
    """The repositories bound to one connection inside a database's ``transaction()`` block.

    ``Transaction[Sync]`` in ``Database.transaction()``, ``Transaction[Async]`` (whose methods
    are awaited) in ``AsyncDatabase.transaction()``.
    """

    __slots__ = (
        "accumulators",
        "checkpoints",
        "connection",
        "event_store",
        "events",
        "executions",
        "fills",
        "schwab_auth",
        "trades",
    )

    def __init__(
        self,
        connection: Any,
        run: Callable[[Operation[Any]], Any],
        keyring: Keyring | None,
        settings: Settings | None = None,
    ) -> None:
        self.connection = connection
        self.trades: TradeRepository[M] = TradeRepository(run)
        self.schwab_auth: SchwabAuthRepository[M] = SchwabAuthRepository(run, keyring=keyring)
        self.fills: FillRepository[M] = FillRepository(run)
        self.executions: ExecutionRepository[M] = ExecutionRepository(run)
        self.accumulators: AccumulatorRepository[M] = AccumulatorRepository(run)
        self.events: TransactionEventQueue[M] = TransactionEventQueue(run, settings=settings)
        self.event_store: TransactionEventStore[M]
        self.checkpoints: Checkpoints[M]
        self.event_store, self.checkpoints = transaction_event_store(run)

    def transaction(self) -> _Savepoint[M]:
        """A nested block, ``with`` (or ``async with``): a savepoint, rolled back alone when
        the block raises."""
        return _Savepoint(self)


AsyncTransaction = Transaction  # the async API's name for Transaction[Async]


class _Savepoint(Generic[M]):
    """psycopg's nested transaction block, with our errors, for either I/O style."""

    __slots__ = ("_block", "_tx")

    def __init__(self, tx: Transaction[M]) -> None:
        self._tx: Transaction[M] = tx
        self._block: Any = tx.connection.transaction()

    def __enter__(self) -> Transaction[M]:
        with translating():
            self._block.__enter__()
        return self._tx

    def __exit__(self, *exc: Any) -> Any:
        with translating():
            return self._block.__exit__(*exc)

    async def __aenter__(self) -> Transaction[M]:
        with translating():
            await self._block.__aenter__()
        return self._tx

    async def __aexit__(self, *exc: Any) -> Any:
        with translating():
            return await self._block.__aexit__(*exc)


class _Block(Generic[M]):
    """A transaction on a borrowed connection, for either I/O style; our errors on the way out.

    The connection is given back by the database, which resets its session settings.
    """

    __slots__ = ("_conn", "_db", "_events", "_run", "_tx")

    def __init__(self, db: Any, run: Callable[[Any, Operation[Any]], Any]) -> None:
        self._db = db
        self._run = run

    def _begun(self, conn: Any) -> Transaction[M]:
        self._conn = conn
        self._tx: Any = conn.transaction()
        tx: Transaction[M] = Transaction(
            conn, partial(self._run, conn), self._db._keyring, self._db.settings
        )
        self._events: Any = tx.event_store  # its appends poke the database's notifier after commit
        return tx

    def _error(self, exc: BaseException | None) -> BaseException | None:
        return self._db._failed(self._conn, exc) if isinstance(exc, psycopg.Error) else None

    def __enter__(self) -> Transaction[M]:
        tx = self._begun(self._db._getconn())
        try:
            self._tx.__enter__()
        except BaseException as exc:
            self._db._give_back(self._conn)
            raise (self._error(exc) or exc) from None
        return tx

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            self._tx.__exit__(kind, exc, tb)
        except psycopg.Error as error:
            exc = error
        finally:
            self._db._give_back(self._conn)
        if (failure := self._error(exc)) is not None:  # a psycopg error of the block, or the commit
            raise failure from None
        if exc is None and self._events.appended:
            self._db.event_store.wakeups.poke()

    async def __aenter__(self) -> Transaction[M]:
        tx = self._begun(await self._db._getconn())
        try:
            await self._tx.__aenter__()
        except BaseException as exc:
            await self._db._give_back(self._conn)
            raise (self._error(exc) or exc) from None
        return tx

    async def __aexit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            await self._tx.__aexit__(kind, exc, tb)
        except psycopg.Error as error:
            exc = error
        finally:
            await self._db._give_back(self._conn)
        if (failure := self._error(exc)) is not None:
            raise failure from None
        if exc is None and self._events.appended:
            self._db.event_store.wakeups.poke()


def _prepare(url: str | None, settings: dict[str, Any]) -> Settings:
    if url is not None:
        settings["url"] = url
    return Settings.from_env(**settings)


class Database(_Pooled[ConnectionPool[Any]]):
    """A connection pool to one PostgreSQL database, with the repositories on it."""

    def __init__(self, settings: Settings, conninfo: str, keyring: Keyring | None = None) -> None:
        super().__init__(settings, conninfo, keyring)
        self._pool = ConnectionPool(connection_class=DeadlineConnection, **self._pool_options())
        self.trades: TradeRepository[Sync] = TradeRepository(self._run)
        self.schwab_auth: SchwabAuthRepository[Sync] = SchwabAuthRepository(
            self._run, keyring=keyring
        )
        self.fills: FillRepository[Sync] = FillRepository(self._run)
        self.executions: ExecutionRepository[Sync] = ExecutionRepository(self._run)
        self.accumulators: AccumulatorRepository[Sync] = AccumulatorRepository(self._run)
        self.events: EventQueue[Sync] = EventQueue(self._run, settings=settings)
        self.event_store: EventStore[Sync] = attach_event_store(self)

    @classmethod
    def connect(cls, url: str | None = None, *, wait: float = 0.0, **settings: Any) -> Database:
        """Open a pool on ``url`` (default ``DATABASE_URL``, else the embedded server).

        ``wait`` is how long to keep retrying a server that is still starting (with backoff and a
        log line per attempt); 0 fails at once with :class:`DatabaseUnavailable`.
        """
        config = _prepare(url, settings)
        keyring = keyring_for(config)  # a bad key fails here, before any connection
        conninfo = build_conninfo(config, server_url(config))
        # one direct connection first: it gives the real reason (refused, auth, timeout), which
        # the pool's background workers only log
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool. Safe to call twice.

        Operations already running finish; their connections are closed as they come back.
        """
        close_event_store(self)
        self._pool.close(timeout=timeout)

    def _configure(self, conn: DeadlineConnection) -> None:
        conn.deadline = self._deadline()

    def _probe(self, wait: float) -> None:
        """Raise DatabaseUnavailable unless a new connection succeeds within about ``wait`` s."""
        try:
            open_connection(self._conninfo, connect_timeout=_whole(wait)).close()
        except DatabaseUnavailable:
            self._server_down = True
            raise
        self._server_down = False

    def _getconn(self, timeout: float | None = None) -> DeadlineConnection:
        """A pooled connection within ``timeout`` (default: the acquire timeout), or our error.

        While the server is known to be down, a probe fails at once instead of waiting.
        """
        wait = self._wait(timeout)
        try:
            if self._server_down:
                self._probe(wait)
            return self._pool.getconn(timeout=wait)  # type: ignore[no-any-return]
        except ACQUIRE_ERRORS as exc:
            raise self._acquire_failed(exc, wait) from None

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        try:
            check_idle_connection(conn)
            return
        except psycopg.Error:
            pass
        # this connection is dead: is it just this one (terminated), or the server?
        try:
            self._probe(self.settings.connect_timeout)
        except DatabaseUnavailable as down:
            raise _ServerDown(down) from None
        raise psycopg.OperationalError("connection lost")  # the pool takes another

    def _run(self, op: Operation[T], timeout: float | None = None) -> T:
        """Run ``op`` on a pooled connection; ``timeout`` bounds both the wait and each answer."""
        conn = self._getconn(timeout)
        if timeout is not None:
            conn.deadline = timeout
        try:
            return run_on(conn, op)  # type: ignore[no-any-return]
        except psycopg.Error as exc:
            raise self._failed(conn, exc) from None
        finally:
            if timeout is not None:
                conn.deadline = self._deadline()
            self._pool.putconn(conn)

    def ping(self) -> float:
        """One round trip to the server; returns its duration in seconds."""
        start = time.perf_counter()
        self._run(PING)
        return time.perf_counter() - start

    def transaction(self) -> _Block[Sync]:
        """A block whose operations share one connection: commit on exit, roll back on error.

        Nest with ``tx.transaction()`` for a savepoint. The connection goes back to the pool
        with its session settings reset, whatever the block SET.
        """
        return _Block(self, _run_translated)

    def _give_back(self, conn: DeadlineConnection) -> None:
        """Return a connection lent to user code, its session settings reset."""
        try:
            if not conn.broken:
                conn.execute(RESET)
        except psycopg.Error:
            conn.close()
        self._pool.putconn(conn)

    def health_check(self, *, timeout: float = 2.0) -> HealthReport:
        """Report on the database; never raises, returns within about ``timeout`` seconds."""
        from persistence.health import health_check

        return health_check(self, timeout=timeout)


class AsyncDatabase(_Pooled[AsyncConnectionPool[Any]]):
    """``Database`` for asyncio: the same operations, settings and errors, each awaited."""

    def __init__(self, settings: Settings, conninfo: str, keyring: Keyring | None = None) -> None:
        super().__init__(settings, conninfo, keyring)
        self._pool = AsyncConnectionPool(
            connection_class=AsyncDeadlineConnection, **self._pool_options()
        )
        self.trades: TradeRepository[Async] = TradeRepository(self._run)
        self.schwab_auth: SchwabAuthRepository[Async] = SchwabAuthRepository(
            self._run, keyring=keyring
        )
        self.fills: FillRepository[Async] = FillRepository(self._run)
        self.executions: ExecutionRepository[Async] = ExecutionRepository(self._run)
        self.accumulators: AccumulatorRepository[Async] = AccumulatorRepository(self._run)
        self.events: EventQueue[Async] = EventQueue(self._run, settings=settings)
        self.event_store: EventStore[Async] = attach_event_store(self)

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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool. Safe to call twice."""
        await close_async_event_store(self)
        await self._pool.close(timeout=timeout)

    async def _configure(self, conn: AsyncDeadlineConnection) -> None:
        conn.deadline = self._deadline()

    async def _probe(self, wait: float) -> None:
        try:
            await (
                await open_async_connection(self._conninfo, connect_timeout=_whole(wait))
            ).close()
        except DatabaseUnavailable:
            self._server_down = True
            raise
        self._server_down = False

    async def _getconn(self, timeout: float | None = None) -> AsyncDeadlineConnection:
        wait = self._wait(timeout)
        try:
            if self._server_down:
                await self._probe(wait)
            return await self._pool.getconn(timeout=wait)  # type: ignore[no-any-return]
        except ACQUIRE_ERRORS as exc:
            raise self._acquire_failed(exc, wait) from None

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            pending = check_idle_connection(conn, AsyncConnectionPool.check_connection)
            if pending is not None:
                await pending
            return
        except psycopg.Error:
            pass
        try:
            await self._probe(self.settings.connect_timeout)
        except DatabaseUnavailable as down:
            raise _ServerDown(down) from None
        raise psycopg.OperationalError("connection lost")

    async def _run(self, op: Operation[T], timeout: float | None = None) -> T:
        conn = await self._getconn(timeout)
        if timeout is not None:
            conn.deadline = timeout
        try:
            return await arun_on(conn, op)  # type: ignore[no-any-return]
        except psycopg.Error as exc:
            raise self._failed(conn, exc) from None
        finally:
            if timeout is not None:
                conn.deadline = self._deadline()
            await self._pool.putconn(conn)

    async def ping(self) -> float:
        """One round trip to the server; returns its duration in seconds."""
        start = time.perf_counter()
        await self._run(PING)
        return time.perf_counter() - start

    def transaction(self) -> _Block[Async]:
        """``Database.transaction`` for asyncio: ``async with db.transaction() as tx``."""
        return _Block(self, _arun_translated)

    async def _give_back(self, conn: AsyncDeadlineConnection) -> None:
        try:
            if not conn.broken:
                await conn.execute(RESET)
        except psycopg.Error:
            await conn.close()
        await self._pool.putconn(conn)

    async def health_check(self, *, timeout: float = 2.0) -> HealthReport:
        """Report on the database; never raises, returns within about ``timeout`` seconds."""
        from persistence.health import async_health_check

        return await async_health_check(self, timeout=timeout)
