"""The pools' short path (``persistence.pools``): it lends the connection returned last, and
whatever it does not handle itself goes through psycopg_pool's own path with the same effect."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from psycopg.pq import TransactionStatus
from psycopg_pool import PoolClosed, PoolTimeout

from persistence import AsyncDatabase
from persistence.operations import Query
from tests.bridge import Loop, unbridged

BACKEND = Query("SELECT pg_backend_pid()", decode=lambda row: row[0])


def test_sequential_calls_reuse_the_connection_returned_last(
    database_url: str, open_database: Callable[..., Any]
) -> None:
    with open_database(database_url, min_size=3, max_size=3) as db:
        before = db.pool.get_stats().get("requests_num", 0)
        backends = {db.run(BACKEND) for _ in range(6)}
        assert len(backends) == 1
        assert db.pool.get_stats()["requests_num"] - before == 6
        assert db.pool.get_stats()["pool_available"] == 3


def test_a_connection_returned_inside_a_transaction_is_rolled_back(
    database_url: str, open_database: Callable[..., Any]
) -> None:
    with open_database(database_url, min_size=1, max_size=1) as db:
        conn = db.pool.getconn()
        conn.execute("BEGIN")
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        db.pool.putconn(unbridged(conn))
        again = db.pool.getconn()
        try:
            assert unbridged(again) is unbridged(conn)
            assert again.info.transaction_status == TransactionStatus.IDLE
        finally:
            db.pool.putconn(unbridged(again))


def test_a_connection_drained_while_lent_is_closed_when_it_comes_back(
    database_url: str, open_database: Callable[..., Any]
) -> None:
    with open_database(database_url, min_size=1, max_size=1) as db:
        first = db.run(BACKEND)
        conn = db.pool.getconn()
        db.pool.drain()
        db.pool.putconn(unbridged(conn))
        assert conn.closed
        assert db.run(BACKEND) != first  # a new connection took its place


def test_a_returned_connection_goes_to_the_caller_waiting_for_one(
    database_url: str, open_database: Callable[..., Any]
) -> None:
    """Given back while another caller waits, the connection goes to that caller at once; left
    in the pool instead, the caller would wait out its acquire timeout."""
    with open_database(database_url, min_size=1, max_size=1, acquire_timeout=10) as db:
        held = db.pool.getconn()
        got: list[Any] = []
        waiter = threading.Thread(target=lambda: got.append(db.run(BACKEND)))
        waiter.start()
        deadline = time.monotonic() + 5
        while db.pool.get_stats().get("requests_waiting", 0) < 1:
            assert time.monotonic() < deadline, "the second caller never waited"
            time.sleep(0.01)
        returned = time.monotonic()
        db.pool.putconn(unbridged(held))
        waiter.join(5)
        assert got and time.monotonic() - returned < 2


def test_a_connection_handed_to_a_task_cancelled_before_it_ran_goes_back_to_the_pool(
    database_url: str, loop: Loop
) -> None:
    """The hand-off resolves the waiter; cancelled before it resumes, the task must not take the
    connection with it: on a pool of one, the next call would wait out its timeout."""

    async def scenario() -> None:
        db = await AsyncDatabase.connect(database_url, min_size=1, max_size=1, acquire_timeout=2)
        try:
            held = await db.pool.getconn()
            waiter = asyncio.create_task(db.pool.getconn())
            while db.pool.get_stats().get("requests_waiting", 0) < 1:
                await asyncio.sleep(0.01)
            assert db.pool.give_back(held)  # handed to the waiter, which has not run yet
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert await db.run(BACKEND, timeout=1) > 0
            assert db.pool.get_stats()["pool_available"] == 1
        finally:
            await db.close()

    loop.run(scenario())


def test_a_connection_given_back_skips_the_tasks_that_stopped_waiting(
    database_url: str, loop: Loop
) -> None:
    """Queued tasks that were cancelled or timed out are passed over, in order; the first still
    waiting gets the connection, and with none left it goes back to the pool."""

    async def scenario() -> None:
        db = await AsyncDatabase.connect(database_url, min_size=1, max_size=1, acquire_timeout=5)
        try:
            held = await db.pool.getconn()
            cancelled = asyncio.create_task(db.pool.getconn())
            timed_out = asyncio.create_task(db.pool.getconn(timeout=0.05))
            served = asyncio.create_task(db.pool.getconn())
            while db.pool.get_stats().get("requests_waiting", 0) < 3:
                await asyncio.sleep(0.01)
            cancelled.cancel()
            with pytest.raises(PoolTimeout, match=r"after 0\.05 sec"):
                await timed_out
            assert db.pool.give_back(held)
            conn = await asyncio.wait_for(served, 1)
            assert conn is held and cancelled.cancelled()
            assert db.pool.give_back(conn)  # nobody waits now: back into the pool
            assert db.pool.get_stats()["pool_available"] == 1
            assert await db.run(BACKEND, timeout=1) > 0
        finally:
            await db.close()

    loop.run(scenario())


def test_a_task_waiting_when_the_pool_closes_is_told_so(database_url: str, loop: Loop) -> None:
    async def scenario() -> None:
        db = await AsyncDatabase.connect(database_url, min_size=1, max_size=1, acquire_timeout=5)
        held = await db.pool.getconn()
        waiter = asyncio.create_task(db.pool.getconn())
        while db.pool.get_stats().get("requests_waiting", 0) < 1:
            await asyncio.sleep(0.01)
        await db.pool.putconn(held)
        assert await waiter is held  # served first, then the close ends the next wait
        again = asyncio.create_task(db.pool.getconn())
        while db.pool.get_stats().get("requests_waiting", 0) < 1:
            await asyncio.sleep(0.01)
        await db.close()
        with pytest.raises(PoolClosed, match="is closed"):
            await asyncio.wait_for(again, 2)

    loop.run(scenario())
