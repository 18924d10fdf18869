"""Database: owns the connection pool; connect, ping, close and transactions."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout, TooManyRequests

from persistence._translate import check_idle_connection, translate, translating
from persistence.config import Settings
from persistence.connect import build_conninfo, describe_target, open_connection, server_url
from persistence.errors import DatabaseUnavailable
from persistence.repositories import SchwabAuthRepository, TradeRepository

__all__ = ["Database", "Transaction"]

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]


class Transaction:
    """The repositories bound to one connection inside ``Database.transaction()``."""

    __slots__ = ("connection", "schwab_auth", "trades")

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.trades = TradeRepository(self._connection)
        self.schwab_auth = SchwabAuthRepository(self._connection)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        with translating():
            yield self.connection

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A nested block: a savepoint, rolled back alone when the block raises."""
        with translating(), self.connection.transaction():
            yield self


class _ServerDown(BaseException):
    """Raised from the pool's check to stop its wait at once (it re-raises BaseException only)."""

    def __init__(self, error: DatabaseUnavailable) -> None:
        self.error = error


# The pool retries a lost connection with a growing delay; giving up after this many seconds
# lets the next request start a fresh attempt at once, so recovery never waits on a long backoff.
RECONNECT_TIMEOUT = 5.0


class _Borrowed:
    """One pooled connection for one operation; psycopg errors leave it translated.

    A class rather than a generator context manager: this is on every operation's path.
    """

    __slots__ = ("_conn", "_db", "_timeout")

    def __init__(self, db: Database, timeout: float | None = None) -> None:
        self._db = db
        self._timeout = timeout

    def __enter__(self) -> Connection:
        self._conn = self._db._getconn(self._timeout)
        return self._conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        # the pool rolls back whatever a returned connection left open
        self._db._pool.putconn(conn)
        if isinstance(exc, psycopg.Error):
            if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and conn.broken:
                self._db._server_down = True
            raise translate(exc) from None


class Database:
    """A connection pool to one PostgreSQL database, with the repositories on it.

    Outside a transaction every operation is one statement in autocommit: one round trip.
    While the server is known to be down, operations fail at once with DatabaseUnavailable
    instead of waiting for a pooled connection; the first one after it is back succeeds.
    """

    def __init__(self, settings: Settings, conninfo: str) -> None:
        self.settings = settings
        self.target = describe_target(conninfo)
        self._conninfo = conninfo
        self._server_down = False
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            conninfo,
            min_size=settings.min_size,
            max_size=settings.max_size,
            timeout=settings.acquire_timeout,
            kwargs={"autocommit": True, "prepare_threshold": settings.prepare_threshold},
            check=self._check,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name="persistence",
            open=False,
        )
        self.trades = TradeRepository(self._connection)
        self.schwab_auth = SchwabAuthRepository(self._connection)

    @classmethod
    def connect(cls, url: str | None = None, *, wait: float = 0.0, **settings: Any) -> Database:
        """Open a pool on ``url`` (default ``DATABASE_URL``, else the embedded server).

        ``wait`` is how long to keep retrying a server that is still starting (with backoff and a
        log line per attempt); 0 fails at once with :class:`DatabaseUnavailable`.
        """
        if url is not None:
            settings["url"] = url
        config = Settings.from_env(**settings)
        conninfo = build_conninfo(config, server_url(config))
        # one direct connection first: it gives the real reason (refused, auth, timeout), which
        # the pool's background workers only log
        open_connection(conninfo, wait=wait).close()
        db = cls(config, conninfo)
        try:
            db._pool.open(wait=True, timeout=config.connect_timeout + 1)
        except PoolTimeout:
            db._pool.close(timeout=0)
            raise DatabaseUnavailable(
                f"could not open {config.min_size} connection(s) to {db.target} within "
                f"{config.connect_timeout:g} s"
            ) from None
        logger.info("connected to %s (pool %d..%d)", db.target, config.min_size, config.max_size)
        return db

    def __repr__(self) -> str:
        state = "closed" if self._pool.closed else "open"
        return f"<Database {self.target} {state}>"

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._pool.closed

    @property
    def pool(self) -> ConnectionPool[Connection]:
        return self._pool

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool. Safe to call twice.

        Operations already running finish; their connections are closed as they come back.
        """
        self._pool.close(timeout=timeout)

    def _probe(self) -> None:
        """Raise DatabaseUnavailable unless a new connection to the server succeeds."""
        try:
            open_connection(self._conninfo).close()
        except DatabaseUnavailable:
            self._server_down = True
            raise
        self._server_down = False

    def _getconn(self, timeout: float | None = None) -> Connection:
        """A pooled connection within ``timeout`` (default: the acquire timeout), or our error.

        While the server is known to be down, a probe fails at once instead of waiting.
        """
        wait = self.settings.acquire_timeout if timeout is None else timeout
        try:
            if self._server_down:
                self._probe()
            return self._pool.getconn(timeout=wait)
        except _ServerDown as down:
            raise down.error from None
        except (psycopg.Error, PoolTimeout, TooManyRequests) as exc:
            raise translate(exc, acquire_timeout=wait) from None

    def _check(self, conn: Connection) -> None:
        try:
            check_idle_connection(conn)
        except psycopg.Error:
            # this connection is dead: is it just this one (terminated), or the server?
            try:
                self._probe()
            except DatabaseUnavailable as down:
                raise _ServerDown(down) from None
            raise  # only this connection: the pool discards it and hands out another

    def _connection(self, timeout: float | None = None) -> _Borrowed:
        """One pooled connection, waited for ``timeout`` s (default: the acquire timeout)."""
        return _Borrowed(self, timeout)

    def ping(self) -> float:
        """One round trip to the server; returns its duration in seconds."""
        with self._connection() as conn:
            start = time.perf_counter()
            conn.execute("SELECT 1")
            return time.perf_counter() - start

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A block whose operations share one connection: commit on exit, roll back on error.

        Nest with ``tx.transaction()`` for a savepoint.
        """
        with self._connection() as conn, conn.transaction():
            yield Transaction(conn)
