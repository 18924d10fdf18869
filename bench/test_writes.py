"""Writes: one trade per transaction, bulk inserts, and four threads inserting at once."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from bench.baselines import (
    SA_INSERT_MANY,
    SA_INSERT_ONE,
    SQLITE_INSERT,
    sa_params,
    sqlite_connect,
    sqlite_row,
)
from bench.conftest import make_trades
from persistence import Database, Trade, queries
from persistence.converter import trade_copy_row, trade_params
from persistence.tables import TRADE_COLUMNS

ONE_ROUNDS = 1_000
COPY_COLUMNS = tuple(c for c in TRADE_COLUMNS if c != "id")
COPY_SQL = f"COPY trades ({', '.join(COPY_COLUMNS)}) FROM STDIN"


def insert_one_operation(
    variant: str, db: Database, raw: Any, engine: sa.Engine, sqlite: sqlite3.Connection
) -> tuple[Callable[[Any], Any], Callable[[Trade], Any]]:
    """The operation, and how its input is prepared from a Trade (outside the timing)."""
    now = datetime.now(UTC)
    if variant == "persistence":
        return db.trades.insert, lambda trade: trade
    if variant == "raw_psycopg":
        return (lambda params: raw.execute(queries.INSERT_TRADE, params).fetchone()), trade_params
    if variant == "sqlalchemy_core":

        def insert(params: dict[str, Any]) -> Any:
            with engine.begin() as conn:
                return conn.execute(SA_INSERT_ONE, params).first()

        return insert, lambda trade: sa_params(trade, now)

    def insert_sqlite(row: tuple[Any, ...]) -> None:
        with sqlite:  # one transaction, committed (and synced) per fill
            sqlite.execute(SQLITE_INSERT, row)

    return insert_sqlite, sqlite_row


@pytest.mark.parametrize("variant", ["persistence", "raw_psycopg", "sqlalchemy_core", "sqlite"])
def test_insert_one(
    benchmark: Any, variant: str, db: Database, raw: Any, engine: sa.Engine, sqlite_path: Path
) -> None:
    """One trade in its own transaction, as the bot saves a fill."""
    benchmark.group = "insert_one"
    sqlite = sqlite_connect(sqlite_path)
    operation, prepare = insert_one_operation(variant, db, raw, engine, sqlite)
    inputs = iter([prepare(t) for t in make_trades(ONE_ROUNDS + 20)])
    benchmark.pedantic(
        operation, setup=lambda: ((next(inputs),), {}), rounds=ONE_ROUNDS, warmup_rounds=10
    )
    sqlite.close()


@pytest.fixture(scope="module")
def bulk() -> Iterator[dict[int, list[Trade]]]:
    cache: dict[int, list[Trade]] = {}
    yield cache
    cache.clear()


def bulk_trades(cache: dict[int, list[Trade]], size: int) -> list[Trade]:
    if size not in cache:
        now = datetime.now(UTC)
        cache[size] = [attrs.evolve(t, created_at=now) for t in make_trades(size)]
    return cache[size]


@pytest.mark.parametrize(
    "variant",
    ["persistence", "raw_psycopg_copy", "raw_psycopg_executemany", "sqlalchemy_core", "sqlite"],
)
@pytest.mark.parametrize("size", [10_000, 100_000])
def test_insert_many(
    benchmark: Any,
    size: int,
    variant: str,
    db: Database,
    raw: Any,
    engine: sa.Engine,
    sqlite_path: Path,
    bulk: dict[int, list[Trade]],
) -> None:
    """A batch of new trades in one transaction, into an empty table."""
    benchmark.group = f"insert_many[{size}]"
    trades = bulk_trades(bulk, size)
    sqlite = sqlite_connect(sqlite_path)

    def empty_tables() -> None:
        raw.execute("TRUNCATE trades RESTART IDENTITY")
        with sqlite:
            sqlite.execute("DELETE FROM trades")

    operation: Callable[[], Any]
    if variant == "persistence":
        operation = lambda: db.trades.insert_many(trades)  # noqa: E731
    elif variant == "raw_psycopg_copy":
        id_at = TRADE_COLUMNS.index("id")
        rows = [(r := trade_copy_row(t))[:id_at] + r[id_at + 1 :] for t in trades]

        def operation() -> None:
            with raw.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
                for row in rows:
                    copy.write_row(row)

    elif variant == "raw_psycopg_executemany":
        params = [trade_params(t) for t in trades]

        def operation() -> None:
            with raw.transaction(), raw.cursor() as cursor:
                cursor.executemany(queries.INSERT_TRADE, params)

    elif variant == "sqlalchemy_core":
        now = datetime.now(UTC)
        sa_rows = [sa_params(t, now) for t in trades]

        def operation() -> None:
            with engine.begin() as conn:
                conn.execute(SA_INSERT_MANY, sa_rows)

    else:
        sqlite_rows = [sqlite_row(t) for t in trades]

        def operation() -> None:
            with sqlite:
                sqlite.executemany(SQLITE_INSERT, sqlite_rows)

    benchmark.pedantic(operation, setup=empty_tables, rounds=3 if size > 10_000 else 5)
    sqlite.close()


@pytest.mark.parametrize("stored_share", [0.0, 0.1, 1.0])
def test_insert_many_over_stored_rows(
    benchmark: Any,
    stored_share: float,
    db: Database,
    raw: Any,
    bulk: dict[int, list[Trade]],
) -> None:
    """10,000 trades of which a share is already stored: the COPY fast path, or its fallback
    (the savepoint rolled back, then a staging table and INSERT ... ON CONFLICT DO NOTHING)."""
    benchmark.group = "insert_many_conflict[10000]"
    trades = bulk_trades(bulk, 10_000)
    already = trades[: int(len(trades) * stored_share)]

    def stored_first() -> None:
        raw.execute("TRUNCATE trades RESTART IDENTITY")
        if already:
            db.trades.insert_many(already)

    new = benchmark.pedantic(lambda: db.trades.insert_many(trades), setup=stored_first, rounds=5)
    assert new == len(trades) - len(already)


THREADS = 4
PER_THREAD = 100


@pytest.mark.parametrize("variant", ["persistence", "sqlite"])
def test_concurrent_insert(benchmark: Any, variant: str, db: Database, sqlite_path: Path) -> None:
    """Four threads, each saving 100 trades one per transaction (400 commits per round)."""
    benchmark.group = "concurrent_insert"
    connections = [sqlite_connect(sqlite_path) for _ in range(THREADS)]
    pending: list[list[Any]] = []

    def work(worker: int) -> None:
        if variant == "persistence":
            for trade in pending[worker]:
                db.trades.insert(trade)
        else:
            conn = connections[worker]
            for row in pending[worker]:
                with conn:
                    conn.execute(SQLITE_INSERT, row)

    def prepare() -> None:
        batches = [make_trades(PER_THREAD) for _ in range(THREADS)]
        if variant == "sqlite":
            batches = [[sqlite_row(t) for t in batch] for batch in batches]
        pending[:] = batches

    with ThreadPoolExecutor(THREADS) as pool:
        benchmark.pedantic(
            lambda: list(pool.map(work, range(THREADS))), setup=prepare, rounds=5, warmup_rounds=1
        )
    for conn in connections:
        conn.close()
