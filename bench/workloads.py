"""The async benchmarks' workloads, shared by ``bench/test_async.py`` and ``bench/compare.py``.

Each builder opens what its variant needs and returns ``(run, close)``: ``run(trades)`` does
the workload once on the given fresh trades (or keys) and returns how many operations it did.
Async variants run on one event loop owned by the caller.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import psycopg_pool

from persistence import AsyncDatabase, Database, Trade, queries
from persistence.converter import trade_params

TASKS = 64  # concurrent inserters
POOL = 8  # connections, for every variant
Run = Callable[[list[Trade]], Awaitable[int]]


def asyncpg_sql(sql: str) -> tuple[str, list[str]]:
    """psycopg's %(name)s placeholders as asyncpg's $n, and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return f"${len(names)}"

    return re.sub(r"%\((\w+)\)s", number, sql), names


async def _fan_out(trades: list[Trade], insert: Callable[[Trade], Awaitable[Any]]) -> int:
    queue = iter(trades)

    async def worker() -> None:
        for trade in queue:  # the shared iterator hands each trade to one task
            await insert(trade)

    await asyncio.gather(*(worker() for _ in range(TASKS)))
    return len(trades)


async def layer_async(url: str) -> tuple[Any, Any]:
    db = await AsyncDatabase.connect(url, min_size=POOL, max_size=POOL)
    return db, db.close


async def get_layer(db: AsyncDatabase, keys: list[tuple[str, int]]) -> int:
    for tx_hash, log_index in keys:
        await db.trades.get(tx_hash, log_index)
    return len(keys)


async def get_psycopg(conn: psycopg.AsyncConnection[Any], keys: list[tuple[str, int]]) -> int:
    for tx_hash, log_index in keys:
        params = {"tx_hash": tx_hash, "log_index": log_index}
        await (await conn.execute(queries.SELECT_TRADE_BY_KEY, params)).fetchone()
    return len(keys)


ASYNCPG_GET = asyncpg_sql(queries.SELECT_TRADE_BY_KEY)[0]
ASYNCPG_INSERT, ASYNCPG_INSERT_NAMES = asyncpg_sql(queries.INSERT_TRADE)


async def get_asyncpg(conn: Any, keys: list[tuple[str, int]]) -> int:
    for tx_hash, log_index in keys:
        await conn.fetchrow(ASYNCPG_GET, tx_hash, log_index)
    return len(keys)


async def insert_layer(db: AsyncDatabase, trades: list[Trade]) -> int:
    return await _fan_out(trades, db.trades.insert)


async def insert_psycopg(pool: psycopg_pool.AsyncConnectionPool[Any], trades: list[Trade]) -> int:
    async def insert(trade: Trade) -> None:
        async with pool.connection() as conn:
            await (await conn.execute(queries.INSERT_TRADE, trade_params(trade))).fetchone()

    return await _fan_out(trades, insert)


async def insert_asyncpg(pool: Any, trades: list[Trade]) -> int:
    async def insert(trade: Trade) -> None:
        params = trade_params(trade)
        await pool.fetchrow(ASYNCPG_INSERT, *(params[name] for name in ASYNCPG_INSERT_NAMES))

    return await _fan_out(trades, insert)


def insert_sync_threads(db: Database, trades: list[Trade]) -> int:
    with ThreadPoolExecutor(POOL) as threads:
        list(threads.map(db.trades.insert, trades))
    return len(trades)


async def open_psycopg_pool(url: str) -> psycopg_pool.AsyncConnectionPool[Any]:
    pool = psycopg_pool.AsyncConnectionPool(
        url, min_size=POOL, max_size=POOL, kwargs={"autocommit": True}, open=False
    )
    await pool.open(wait=True)
    return pool


async def open_asyncpg_pool(url: str) -> Any:
    import asyncpg  # the bench extra only

    return await asyncpg.create_pool(_dsn(url), min_size=POOL, max_size=POOL)


async def open_asyncpg(url: str) -> Any:
    import asyncpg

    return await asyncpg.connect(_dsn(url))


def _dsn(url: str) -> str:
    """asyncpg takes URLs only; a libpq key=value string becomes one."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    host = str(params.get("host") or "127.0.0.1")
    port = params.get("port") or 5432
    user = params.get("user") or "postgres"
    if host.startswith("/"):  # a unix socket directory
        return f"postgresql://{user}@/{params.get('dbname')}?host={host}&port={port}"
    return f"postgresql://{user}@{host}:{port}/{params.get('dbname')}"
