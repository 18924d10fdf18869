"""Database: owns the connection pool; connect, ping, close and transactions."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from persistence._translate import check_idle_connection, translating
from persistence.config import Settings
from persistence.connect import build_conninfo, describe_target, open_connection, server_url
from persistence.errors import DatabaseUnavailable
from persistence.repositories import SchwabAuthRepository, TradeRepository

__all__ = ["Database", "Transaction"]

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]
ConnectionSource = Callable[[], AbstractContextManager[Connection]]


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


class Database:
    """A connection pool to one PostgreSQL database, with the repositories on it.

    Outside a transaction every operation is one statement in autocommit: one round trip.
    """

    def __init__(self, pool: ConnectionPool[Connection], settings: Settings, target: str) -> None:
        self._pool = pool
        self.settings = settings
        self.target = target
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
        target = describe_target(conninfo)
        # one direct connection first: it gives the real reason (refused, auth, timeout), which
        # the pool's background workers only log
        open_connection(conninfo, wait=wait).close()
        pool: ConnectionPool[Connection] = ConnectionPool(
            conninfo,
            min_size=config.min_size,
            max_size=config.max_size,
            timeout=config.acquire_timeout,
            kwargs={"autocommit": True, "prepare_threshold": config.prepare_threshold},
            check=check_idle_connection,
            name="persistence",
            open=False,
        )
        try:
            pool.open(wait=True, timeout=config.connect_timeout + 1)
        except PoolTimeout:
            pool.close(timeout=0)
            raise DatabaseUnavailable(
                f"could not open {config.min_size} connection(s) to {target} within "
                f"{config.connect_timeout:g} s"
            ) from None
        logger.info("connected to %s (pool %d..%d)", target, config.min_size, config.max_size)
        return cls(pool, config, target)

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
        """Close the pool; connections in use are closed when returned. Safe to call twice."""
        self._pool.close(timeout=timeout)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        with translating(self.settings.acquire_timeout), self._pool.connection() as conn:
            yield conn

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
