"""The private names of psycopg and psycopg_pool the layer relies on, pinned.

The client-side deadline (``persistence/connection.py``) overrides psycopg's ``Connection.wait``
and catches ``psycopg.errors._WaitTimeout``; the health report counts the live waiters in
psycopg_pool's ``_waiting`` queue. Neither is public API: checked against psycopg 3.3.9 and
psycopg_pool 3.3.3. An upgrade that changes one fails here, loudly, rather than leaving a call
to wait forever on a partition or a report to count waiters wrongly.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import time
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg_pool
import psycopg_pool.pool
import psycopg_pool.pool_async
import pytest

from persistence.connection import AsyncDeadlineConnection, DeadlineConnection
from persistence.errors import DatabaseUnavailable
from persistence.operations import NONE, Query

SLEEP = Query("SELECT pg_sleep(5)", fetch=NONE)


def test_psycopg_signals_an_expired_wait_with_its_private_exception() -> None:
    assert issubclass(psycopg.errors._WaitTimeout, psycopg.OperationalError)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(DeadlineConnection, psycopg.Connection), (AsyncDeadlineConnection, psycopg.AsyncConnection)],
)
def test_the_overridden_wait_has_psycopgs_signature(ours: type, theirs: type) -> None:
    def shape(function: Any) -> list[tuple[str, Any, Any]]:
        parameters = inspect.signature(function).parameters.values()
        return [(p.name, p.kind, p.default) for p in parameters]

    assert [name for name, _, _ in shape(theirs.wait)] == ["self", "gen", "interval", "timeout"]
    assert shape(ours.wait) == shape(theirs.wait)
    assert inspect.iscoroutinefunction(ours.wait) == inspect.iscoroutinefunction(theirs.wait)


def test_a_deadline_fires_on_a_server_that_does_not_answer_in_time(
    database_url: str, open_database: Callable[..., Any]
) -> None:
    """The server hears the statement but answers too late: the wait's own timeout ends it."""
    with open_database(database_url, operation_timeout=0.5, min_size=1, max_size=1) as db:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match=r"did not answer within 0\.5 s"):
            db.run(SLEEP)
        assert time.monotonic() - started < 0.5 + 0.5
        assert db.ping() > 0  # the dropped connection was replaced


def test_run_bounds_one_operation_with_its_timeout_only(
    database_url: str, open_database: Callable[..., Any]
) -> None:
    with open_database(database_url, min_size=1, max_size=1) as db:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match=r"did not answer within 0\.5 s"):
            db.run(SLEEP, timeout=0.5)
        assert time.monotonic() - started < 0.5 + 0.5
        db.run(Query("SELECT 1", fetch=NONE), timeout=0.5)
        # the same (only) connection: the operation timeout is back for the next call
        db.run(Query("SELECT pg_sleep(0.8)", fetch=NONE))


@pytest.mark.parametrize(
    ("pool_class", "module"),
    [
        (psycopg_pool.ConnectionPool, psycopg_pool.pool),
        (psycopg_pool.AsyncConnectionPool, psycopg_pool.pool_async),
    ],
)
def test_the_pool_queues_its_waiters_where_the_health_check_reads_them(
    pool_class: type, module: Any
) -> None:
    pool = pool_class("", open=False)
    assert isinstance(pool._waiting, collections.deque)
    waiter = module.WaitingClient()
    assert waiter.conn is None and waiter.error is None  # still waiting: neither set yet


@pytest.mark.parametrize(
    "pool_class", [psycopg_pool.ConnectionPool, psycopg_pool.AsyncConnectionPool]
)
def test_the_pool_state_the_short_path_reads_is_where_it_was(pool_class: type) -> None:
    """``persistence.pools`` reads and changes psycopg_pool's private state directly."""
    pool = pool_class("", open=False)
    assert isinstance(pool._pool, collections.deque)
    assert isinstance(pool._waiting, collections.deque)
    assert pool._closed is True and pool._reset is None and pool._pool_full_event is None
    assert isinstance(pool._nconns_min, int) and isinstance(pool._drained_at, float)
    assert pool._stats[pool_class._REQUESTS_NUM] == 0
    assert callable(pool._check_connection) and callable(pool._putconn)
    parameters = list(inspect.signature(pool._putconn).parameters)
    assert parameters == ["conn", "from_getconn"]


def test_a_pooled_connection_carries_its_creation_and_expiry_times(database_url: str) -> None:
    pool = psycopg_pool.ConnectionPool(database_url, min_size=1, open=True)
    with pool, pool.connection() as conn:
        assert isinstance(conn._created_at, float) and isinstance(conn._expire_at, float)
        assert conn._created_at < conn._expire_at


def test_the_async_pools_queueing_is_the_one_persistence_pools_copied() -> None:
    """``AsyncPool._getconn_unchecked`` is psycopg_pool 3.3.3's, line for line, with a cheaper
    waiter; an upgrade that changes upstream's must be read and copied again."""
    source = inspect.getsource(psycopg_pool.AsyncConnectionPool._getconn_unchecked)
    assert hashlib.sha256(source.encode()).hexdigest() == (
        "55c9edf03c0835933878179bf5c6c8f37b5a95b1c83dc6155d6ca1ac02f552ce"
    ), "psycopg_pool's _getconn_unchecked changed: compare it with persistence/pools.py's copy"
    waiter = psycopg_pool.pool_async.WaitingClient
    assert all(inspect.iscoroutinefunction(getattr(waiter, name)) for name in ("set", "fail"))
    assert callable(psycopg_pool.pool_async.ReturnConnection)
