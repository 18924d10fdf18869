"""What only the async API has: task cancellation and many tasks on a small pool.

Everything else runs on both APIs through the ``api`` fixture (see tests/bridge.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from persistence import AsyncDatabase, TradeStatus
from persistence.connection import AsyncDeadlineConnection
from persistence.database import RESET
from tests.bridge import Loop
from tests.factories import make_trade

APP = "persistence-cancel-test"


@pytest.fixture
def url(emptied_url: str) -> str:
    return emptied_url


def test_a_cancelled_update_is_cancelled_on_the_server_and_never_lands(
    url: str, loop: Loop
) -> None:
    async def scenario() -> None:
        db = await AsyncDatabase.connect(url, min_size=2, max_size=2, application_name=APP)
        try:
            trade = make_trade()
            await db.trades.insert(trade)
            async with await psycopg.AsyncConnection.connect(url) as locker:  # noqa: SIM117 - the lock ends with the inner block
                async with locker.transaction():
                    await locker.execute(
                        "SELECT 1 FROM trades WHERE tx_hash = %s FOR UPDATE", (trade.tx_hash,)
                    )
                    with pytest.raises(TimeoutError):
                        async with asyncio.timeout(0.5):  # the UPDATE waits on our row lock
                            await db.trades.update_status(
                                trade.tx_hash, 0, "COMPLETED", schwab_order_id="X"
                            )
                    cursor = await locker.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND application_name = %s AND state <> 'idle'",
                        (APP,),
                    )
                    assert await cursor.fetchone() == (0,)  # nothing of ours still waits
                # the lock is released here: a cancelled UPDATE that lingered would now land
            await asyncio.sleep(0.2)
            counts = await asyncio.gather(*(db.trades.count() for _ in range(8)))
            assert counts == [1] * 8  # every pooled connection still works
            saved = await db.trades.get(trade.tx_hash, 0)
            assert saved is not None and saved.status is TradeStatus.PENDING
            assert saved.schwab_order_id is None
        finally:
            await db.close()

    loop.run(scenario())


def test_a_cancelled_transaction_rolls_back_and_returns_its_connection(
    url: str, loop: Loop
) -> None:
    async def scenario() -> None:
        db = await AsyncDatabase.connect(url, min_size=1, max_size=1)
        try:

            async def write_then_wait() -> None:
                async with db.transaction() as tx:
                    await tx.trades.insert(make_trade())
                    await tx.connection.execute("SELECT pg_sleep(5)")

            task = asyncio.create_task(write_then_wait())
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await db.trades.count() == 0  # the one connection is back, and clean
        finally:
            await db.close()

    loop.run(scenario())


def test_a_block_cancelled_while_its_connection_goes_back_still_returns_it(
    url: str, loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancellation lands in the RESET that cleans the lent connection before the pool
    gets it back (a caller's timeout, found by a probe: 300 cancelled projections emptied a
    pool of 4). The caller is cancelled at once; the connection still goes back."""

    async def scenario() -> None:
        db = await AsyncDatabase.connect(url, min_size=1, max_size=1, acquire_timeout=2)
        parked, gate = asyncio.Event(), asyncio.Event()
        execute = AsyncDeadlineConnection.execute

        async def held_reset(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            if query == RESET:  # the block's body is done: hold the task in its cleanup
                parked.set()
                await gate.wait()
            return await execute(self, query, *args, **kwargs)

        try:

            async def block() -> None:
                async with db.transaction() as tx:
                    await tx.trades.count()

            monkeypatch.setattr(AsyncDeadlineConnection, "execute", held_reset)
            task = asyncio.create_task(block())
            await parked.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.set()
            monkeypatch.undo()
            assert await db.trades.count() == 0  # the one connection came back
        finally:
            gate.set()
            await db.close()

    loop.run(scenario())


@pytest.mark.slow
def test_300_tasks_on_a_pool_of_10_insert_each_trade_exactly_once(url: str, loop: Loop) -> None:
    async def scenario() -> None:
        db = await AsyncDatabase.connect(url, min_size=10, max_size=10)
        try:
            trades = [make_trade(log_index=index) for index in range(300)]
            ids = await asyncio.gather(*(db.trades.insert(trade) for trade in trades))
            assert None not in ids and len(set(ids)) == 300
            again = await asyncio.gather(*(db.trades.insert(trade) for trade in trades))
            assert again == [None] * 300  # a retry of each is safe
            assert await db.trades.count() == 300
        finally:
            await db.close()

    loop.run(scenario())


async def _trades_arriving(count: int):  # type: ignore[no-untyped-def]
    for index in range(count):
        await asyncio.sleep(0)
        yield make_trade(log_index=index)


def test_insert_many_takes_an_async_iterable_in_batches(url: str, loop: Loop) -> None:
    async def scenario() -> None:
        async with await AsyncDatabase.connect(url) as db:
            assert await db.trades.insert_many(_trades_arriving(250), batch_size=100) == 250
            assert await db.trades.count() == 250

    loop.run(scenario())


def test_connect_ping_and_close_twice(url: str, loop: Loop) -> None:
    async def scenario() -> None:
        db = await AsyncDatabase.connect(url, application_name="async-ping")
        assert await db.ping() > 0
        assert "open" in repr(db) and db.settings.application_name == "async-ping"
        report = await db.health_check()
        assert report.status == "healthy" and report.pool["max_size"] == 10
        await db.close()
        await db.close()  # closing twice is fine
        assert db.closed
        assert (await db.health_check()).status == "unhealthy"

    loop.run(scenario())
