"""The async moonshot of issue #31: could the layer's async ``get`` reach asyncpg's time?

    python -m bench.moonshot [--rounds 30]

Paired and interleaved as ``bench.compare`` (every round runs one batch of each variant in a
shuffled order; ratios taken within the round, to the first variant), two groups:

- **200 sequential gets**: raw psycopg async on one connection (the baseline), the layer
  (``AsyncDatabase``, psycopg), raw asyncpg on one connection, and the same operation
  (``operations.trades.get``: its SQL, parameters and decode) run on an asyncpg connection by
  ``run_on_asyncpg`` below, a sketch of an optional asyncpg driver behind the same operations.
  Pipeline mode cannot help here: each get waits for its row before the next is sent.
- **200 gets by 8 tasks at once**: the layer on a pool of 8; the operations on one psycopg
  connection in pipeline mode, shared by the 8 tasks (their statements in flight together,
  no round trip waited for each); raw asyncpg on a pool of 8.

psycopg stays the library's driver; asyncpg is in the ``bench`` extra only.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from bench import workloads
from bench.compare import compare
from bench.conftest import make_trades
from persistence import AsyncDatabase
from persistence.operations import ONE, Query
from persistence.operations import trades as trade_ops
from tests.support import admin_url, migrated_database

GETS = 200
TASKS = 8
_ASYNCPG_SQL: dict[str, tuple[str, list[str]]] = {}


async def run_on_asyncpg(conn: Any, op: Query[Any]) -> Any:
    """A one-row ``Query`` on an asyncpg connection: its SQL with $n placeholders (converted
    once per statement), the same parameters, the same decode (an asyncpg Record is indexed
    like psycopg's tuple, with the same Python types for these columns)."""
    sql, names = _ASYNCPG_SQL.get(op.sql) or _ASYNCPG_SQL.setdefault(
        op.sql, workloads.asyncpg_sql(op.sql)
    )
    assert op.fetch == ONE
    return op.decode(await conn.fetchrow(sql, *(op.params[name] for name in names)))


async def _gets_on_pipeline(conn: psycopg.AsyncConnection[Any], keys: list[Any]) -> None:
    """The gets by TASKS tasks on one connection in pipeline mode: each task's statement is sent
    without waiting for the replies of the others."""
    queue = iter(keys)

    async def task() -> None:
        for tx_hash, log_index in queue:
            op = trade_ops.get(tx_hash, log_index)
            cursor = await conn.execute(op.sql, op.params)
            op.decode(await cursor.fetchone())

    async with conn.pipeline():
        await asyncio.gather(*(task() for _ in range(TASKS)))


async def _fan_out(keys: list[Any], get: Callable[[str, int], Awaitable[Any]]) -> None:
    queue = iter(keys)

    async def task() -> None:
        for tx_hash, log_index in queue:
            await get(tx_hash, log_index)

    await asyncio.gather(*(task() for _ in range(TASKS)))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.moonshot", description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    with migrated_database(admin_url(), "persistence_moonshot") as url:
        adb = run(AsyncDatabase.connect(url, min_size=TASKS, max_size=TASKS))
        araw = run(psycopg.AsyncConnection.connect(url, autocommit=True))
        piped = run(psycopg.AsyncConnection.connect(url, autocommit=True))
        pg = run(workloads.open_asyncpg(url))
        pgpool = run(workloads.open_asyncpg_pool(url))
        stored = make_trades(10_000)
        run(adb.trades.insert_many(stored))
        keys = [(t.tx_hash, t.log_index) for t in stored]
        # the same operation on either driver gives the same Trade
        assert run(run_on_asyncpg(pg, trade_ops.get(*keys[0]))) == run(adb.trades.get(*keys[0]))

        def picked(work: Callable[[list[Any]], Awaitable[Any]]) -> Callable[[], float]:
            def once() -> float:
                chosen = random.sample(keys, GETS)
                start = loop.time()
                run(work(chosen))
                return loop.time() - start

            return once

        async def layer_seq(ks: list[Any]) -> None:
            for k in ks:
                await adb.trades.get(*k)

        async def ops_on_asyncpg(ks: list[Any]) -> None:
            for k in ks:
                await run_on_asyncpg(pg, trade_ops.get(*k))

        async def asyncpg_pool_get(tx_hash: str, log_index: int) -> Any:
            return await pgpool.fetchrow(workloads.ASYNCPG_GET, tx_hash, log_index)

        rows = ["| group | variant | median per batch | ratio to first | 10th-90th pct |"]
        rows.append("|---|---|---|---|---|")
        rows += compare(
            f"get, {GETS} sequential (async)",
            {
                "raw_psycopg_async": picked(lambda ks: workloads.get_psycopg(araw, ks)),
                "persistence_async": picked(layer_seq),
                "raw_asyncpg": picked(lambda ks: workloads.get_asyncpg(pg, ks)),
                "operations_on_asyncpg": picked(ops_on_asyncpg),
            },
            args.rounds,
        )
        rows += compare(
            f"get, {GETS} by {TASKS} tasks at once (async)",
            {
                "persistence_async_pool_8": picked(lambda ks: _fan_out(ks, adb.trades.get)),
                "operations_psycopg_pipeline_1_conn": picked(
                    lambda ks: _gets_on_pipeline(piped, ks)
                ),
                "raw_asyncpg_pool_8": picked(lambda ks: _fan_out(ks, asyncpg_pool_get)),
            },
            args.rounds,
        )
        print("\n".join(rows))
        for closing in (adb.close(), araw.close(), piped.close(), pg.close(), pgpool.close()):
            run(closing)
    loop.close()


if __name__ == "__main__":
    main()
