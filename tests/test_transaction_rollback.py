"""A transaction block that ends by anything but its own end commits nothing.

An exception that is not an ``Exception`` (a cancelled task, Ctrl-C, ``sys.exit``) leaves the
block as surely as an error: committing then would store half of a unit of work (a fill
recorded, its event not marked). The block rolls back, and its connection goes back to the pool
clean. The cancellation during a server query is in tests/test_async.py; here the task is
cancelled between two statements, while the block awaits something else.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from persistence import AsyncDatabase
from tests.bridge import Loop
from tests.factories import make_fill, make_trade, tx_hash

APP = "persistence-rollback-test"


class Interrupted(BaseException):
    """A BaseException of the caller's own, neither Exception nor one of Python's."""


def idle_in_transaction(url: str) -> int:
    """This test's sessions left idle inside a transaction."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = %s AND state LIKE 'idle in transaction%%'",
            (APP,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    "interrupt", [KeyboardInterrupt, SystemExit, asyncio.CancelledError, Interrupted]
)
def test_a_base_exception_in_a_block_rolls_back(
    open_database: Any, emptied_url: str, interrupt: type[BaseException]
) -> None:
    first, second = make_trade(), make_trade()
    with open_database(
        emptied_url, min_size=1, max_size=1, acquire_timeout=2, application_name=APP
    ) as db:
        with pytest.raises(interrupt), db.transaction() as tx:
            tx.trades.insert(first)
            raise interrupt()
        assert db.trades.get(first.tx_hash, 0) is None
        assert idle_in_transaction(emptied_url) == 0
        # the pool's one connection is back and usable: a block after it commits
        with db.transaction() as tx:
            tx.trades.insert(second)
        assert [t.tx_hash for t in db.trades.list()] == [second.tx_hash]


def test_a_task_cancelled_between_two_statements_commits_nothing(
    emptied_url: str, loop: Loop
) -> None:
    first, second = make_trade(), make_trade()

    async def scenario() -> None:
        db = await AsyncDatabase.connect(
            emptied_url, min_size=1, max_size=1, acquire_timeout=2, application_name=APP
        )
        try:
            between, never = asyncio.Event(), asyncio.Event()

            async def two_inserts() -> None:
                async with db.transaction() as tx:
                    await tx.trades.insert(first)
                    between.set()
                    await never.wait()  # cancelled here: no query is running
                    await tx.trades.insert(second)

            task = asyncio.create_task(two_inserts())
            await between.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await db.trades.count() == 0
            assert await asyncio.to_thread(idle_in_transaction, emptied_url) == 0
            # the pool's one connection is back and usable
            async with db.transaction() as tx:
                await tx.trades.insert(second)
            assert [t.tx_hash for t in await db.trades.list()] == [second.tx_hash]
        finally:
            await db.close()

    loop.run(scenario())
    with psycopg.connect(emptied_url) as conn:  # seen from outside the library too
        assert conn.execute("SELECT tx_hash FROM trades").fetchall() == [(second.tx_hash,)]


def test_a_worker_cancelled_before_marking_its_event_leaves_it_queued(
    emptied_url: str, loop: Loop
) -> None:
    """The bot's unit of work: claim, record the fill, await the broker, mark processed."""
    fill = make_fill("1.5")

    async def scenario() -> None:
        db = await AsyncDatabase.connect(emptied_url, min_size=1, max_size=1, acquire_timeout=2)
        try:
            await db.events.enqueue(tx_hash(), 0, 1, {"n": 1})
            recorded = asyncio.Event()

            async def work() -> None:
                async with db.transaction() as tx:
                    event = await tx.events.claim_next()
                    await tx.fills.record(fill)
                    recorded.set()
                    await asyncio.sleep(30)  # the broker call, cancelled
                    await tx.events.mark_processed(event.id)

            task = asyncio.create_task(work())
            await recorded.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await db.events.count_unprocessed() == 1
            assert await db.fills.get(fill.tx_hash, 0) is None
            assert await db.accumulators.list() == []
            assert await db.executions.pending() == []
            # the event is claimable again, on the same (only) connection
            async with db.transaction() as tx:
                event = await tx.events.claim_next()
                assert event is not None and event.payload == {"n": 1}
                recorded_fill = await tx.fills.record(fill)
                await tx.events.mark_processed(event.id)
            assert recorded_fill.execution is not None and recorded_fill.execution.shares == 1
            assert await db.events.count_unprocessed() == 0
        finally:
            await db.close()

    loop.run(scenario())
