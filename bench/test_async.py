"""The async API against raw psycopg async, asyncpg, and the sync layer with threads.

One operation kind per group; each round does a batch (100 lookups, 100 inserts, or 1,000
inserts from 64 tasks on 8 connections), so the per-round event-loop entry is the same for
every variant. For paired, interleaved ratios with their spread: ``python -m bench.compare``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest

from bench import workloads
from bench.conftest import make_trades
from persistence import AsyncDatabase, Database, Trade

BATCH = 100
CONCURRENT = 1_000
ROUNDS = 20
VARIANTS = ["persistence_async", "raw_psycopg_async", "asyncpg", "persistence_sync"]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    yield running
    running.close()


@pytest.fixture(scope="module")
def adb(url: str, loop: asyncio.AbstractEventLoop) -> Iterator[AsyncDatabase]:
    db = loop.run_until_complete(
        AsyncDatabase.connect(url, min_size=workloads.POOL, max_size=workloads.POOL)
    )
    yield db
    loop.run_until_complete(db.close())


@pytest.fixture(scope="module")
def peers(url: str, loop: asyncio.AbstractEventLoop) -> Iterator[dict[str, Any]]:
    """The baselines' connections and pools, opened once per module."""
    opened = {
        "psycopg_conn": loop.run_until_complete(
            workloads.psycopg.AsyncConnection.connect(url, autocommit=True)
        ),
        "psycopg_pool": loop.run_until_complete(workloads.open_psycopg_pool(url)),
        "asyncpg_conn": loop.run_until_complete(workloads.open_asyncpg(url)),
        "asyncpg_pool": loop.run_until_complete(workloads.open_asyncpg_pool(url)),
    }
    yield opened
    loop.run_until_complete(opened["psycopg_conn"].close())
    loop.run_until_complete(opened["psycopg_pool"].close())
    loop.run_until_complete(opened["asyncpg_conn"].close())
    loop.run_until_complete(opened["asyncpg_pool"].close())


@pytest.fixture(scope="module")
def stored_keys(db: Database) -> Iterator[tuple[str, int]]:
    trades = make_trades(10_000)
    db.trades.insert_many(trades)
    picks = [(t.tx_hash, t.log_index) for t in random.Random(7).sample(trades, 2_000)]
    return itertools.cycle(picks)


def _insert_one_by_one(insert: Any) -> Any:
    async def run(trades: list[Trade]) -> int:
        for trade in trades:
            await insert(trade)
        return len(trades)

    return run


@pytest.mark.parametrize("variant", VARIANTS)
def test_async_get(
    benchmark: Any,
    variant: str,
    loop: asyncio.AbstractEventLoop,
    adb: AsyncDatabase,
    db: Database,
    peers: dict[str, Any],
    stored_keys: Iterator[tuple[str, int]],
) -> None:
    """100 point lookups by (tx_hash, log_index), one after another on one task."""
    benchmark.group = "async_get"
    run: Any = {
        "persistence_async": lambda keys: workloads.get_layer(adb, keys),
        "raw_psycopg_async": lambda keys: workloads.get_psycopg(peers["psycopg_conn"], keys),
        "asyncpg": lambda keys: workloads.get_asyncpg(peers["asyncpg_conn"], keys),
    }.get(variant)

    def batch() -> tuple[tuple[list[tuple[str, int]]], dict[str, Any]]:
        return ([next(stored_keys) for _ in range(BATCH)],), {}

    if run is None:
        done = benchmark.pedantic(
            lambda keys: [db.trades.get(*key) for key in keys], setup=batch, rounds=ROUNDS
        )
    else:
        done = benchmark.pedantic(
            lambda keys: loop.run_until_complete(run(keys)), setup=batch, rounds=ROUNDS
        )
    assert done == BATCH or len(done) == BATCH


@pytest.mark.parametrize("variant", VARIANTS)
def test_async_insert_one(
    benchmark: Any,
    variant: str,
    loop: asyncio.AbstractEventLoop,
    adb: AsyncDatabase,
    db: Database,
    peers: dict[str, Any],
) -> None:
    """100 single-row inserts of new trades, one after another on one task."""
    benchmark.group = "async_insert_one"

    async def raw_psycopg(trade: Trade) -> Any:
        async with peers["psycopg_pool"].connection() as conn:
            params = workloads.trade_params(trade)
            return await (await conn.execute(workloads.queries.INSERT_TRADE, params)).fetchone()

    async def asyncpg(trade: Trade) -> Any:
        params = workloads.trade_params(trade)
        names = workloads.ASYNCPG_INSERT_NAMES
        return await peers["asyncpg_pool"].fetchrow(
            workloads.ASYNCPG_INSERT, *(params[n] for n in names)
        )

    inserts = {
        "persistence_async": adb.trades.insert,
        "raw_psycopg_async": raw_psycopg,
        "asyncpg": asyncpg,
    }

    def batch() -> tuple[tuple[list[Trade]], dict[str, Any]]:
        return (make_trades(BATCH),), {}

    if variant == "persistence_sync":
        done = benchmark.pedantic(
            lambda trades: [db.trades.insert(t) for t in trades], setup=batch, rounds=ROUNDS
        )
        assert len(done) == BATCH
        return
    run = _insert_one_by_one(inserts[variant])
    done = benchmark.pedantic(
        lambda trades: loop.run_until_complete(run(trades)), setup=batch, rounds=ROUNDS
    )
    assert done == BATCH


@pytest.mark.parametrize(
    "variant", ["persistence_async", "raw_psycopg_async", "asyncpg", "persistence_sync_8_threads"]
)
def test_async_concurrent_insert(
    benchmark: Any,
    variant: str,
    loop: asyncio.AbstractEventLoop,
    adb: AsyncDatabase,
    db: Database,
    peers: dict[str, Any],
) -> None:
    """1,000 inserts from 64 tasks sharing 8 connections (the sync layer: 8 threads)."""
    benchmark.group = "async_concurrent_insert"

    def batch() -> tuple[tuple[list[Trade]], dict[str, Any]]:
        return (make_trades(CONCURRENT),), {}

    if variant == "persistence_sync_8_threads":
        done = benchmark.pedantic(
            lambda trades: workloads.insert_sync_threads(db, trades), setup=batch, rounds=5
        )
    else:
        run: Any = {
            "persistence_async": lambda t: workloads.insert_layer(adb, t),
            "raw_psycopg_async": lambda t: workloads.insert_psycopg(peers["psycopg_pool"], t),
            "asyncpg": lambda t: workloads.insert_asyncpg(peers["asyncpg_pool"], t),
        }[variant]
        done = benchmark.pedantic(
            lambda trades: loop.run_until_complete(run(trades)), setup=batch, rounds=5
        )
    assert done == CONCURRENT
