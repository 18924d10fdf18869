"""Reads on a 100,000-trade table: a point lookup, and the 1,000 pending trades."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from bench.baselines import (
    SA_GET,
    SA_PENDING,
    SQLITE_GET,
    SQLITE_INSERT,
    SQLITE_PENDING,
    sqlite_connect,
    sqlite_row,
)
from bench.conftest import make_trades
from persistence import Database, Trade, queries

POPULATION = 100_000
PENDING = 1_000
VARIANTS = ["persistence", "raw_psycopg", "sqlalchemy_core", "sqlite"]


@pytest.fixture(scope="module")
def population(db: Database, sqlite_path: Path) -> list[Trade]:
    """100,000 trades in every store: 99,000 completed, 1,000 pending."""
    done = datetime.now(UTC)
    trades = [
        t
        if index < PENDING
        else attrs.evolve(t, status="COMPLETED", completed_at=done, schwab_order_id=f"O{index}")
        for index, t in enumerate(make_trades(POPULATION, created_at=done))
    ]
    db.trades.insert_many(trades)
    with db.pool.connection() as conn:
        conn.execute("ANALYZE trades")
    sqlite = sqlite_connect(sqlite_path)
    with sqlite:
        sqlite.executemany(SQLITE_INSERT, [sqlite_row(t) for t in trades])
    sqlite.close()
    return trades


def keys(population: list[Trade]) -> Iterator[tuple[str, int]]:
    picks = [(t.tx_hash, t.log_index) for t in random.Random(7).sample(population, 5_000)]
    return itertools.cycle(picks)


@pytest.mark.parametrize("variant", VARIANTS)
def test_get(
    benchmark: Any,
    variant: str,
    population: list[Trade],
    db: Database,
    raw: Any,
    engine: sa.Engine,
    sqlite_path: Path,
) -> None:
    """Point lookup by (tx_hash, log_index); the layer returns a Trade."""
    benchmark.group = "get"
    sqlite = sqlite_connect(sqlite_path)
    lookup: Callable[[str, int], Any]
    if variant == "persistence":
        lookup = db.trades.get
    elif variant == "raw_psycopg":

        def lookup(tx_hash: str, log_index: int) -> Any:
            params = {"tx_hash": tx_hash, "log_index": log_index}
            return raw.execute(queries.SELECT_TRADE_BY_KEY, params).fetchone()

    elif variant == "sqlalchemy_core":

        def lookup(tx_hash: str, log_index: int) -> Any:
            with engine.connect() as conn:
                return conn.execute(SA_GET, {"tx_hash": tx_hash, "log_index": log_index}).first()

    else:

        def lookup(tx_hash: str, log_index: int) -> Any:
            return sqlite.execute(SQLITE_GET, (tx_hash, log_index)).fetchone()

    picks = keys(population)
    found = benchmark(lambda: lookup(*next(picks)))
    assert found is not None
    sqlite.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_list_pending(
    benchmark: Any,
    variant: str,
    population: list[Trade],
    db: Database,
    raw: Any,
    engine: sa.Engine,
    sqlite_path: Path,
) -> None:
    """The 1,000 pending trades, oldest first; the layer structures them into Trades."""
    benchmark.group = "list_pending"
    sqlite = sqlite_connect(sqlite_path)
    fetch: Callable[[], list[Any]]
    if variant == "persistence":
        fetch = db.trades.pending
    elif variant == "raw_psycopg":
        fetch = lambda: raw.execute(queries.SELECT_PENDING_TRADES).fetchall()  # noqa: E731
    elif variant == "sqlalchemy_core":

        def fetch() -> list[Any]:
            with engine.connect() as conn:
                return list(conn.execute(SA_PENDING).all())

    else:
        fetch = lambda: sqlite.execute(SQLITE_PENDING).fetchall()  # noqa: E731
    rows = benchmark(fetch)
    assert len(rows) == PENDING
    sqlite.close()


@pytest.mark.parametrize("variant", ["utc_normalised", "as_fetched"])
def test_decode_rows(benchmark: Any, variant: str, population: list[Trade], db: Database) -> None:
    """Build 1,000 Trades from fetched rows: with the UTC normalisation of the datetimes (what
    the library does), and without it (what it cost before)."""
    from persistence.converter import by_value, row_decoder, trade_from_row
    from persistence.models import Instruction, TradeStatus
    from persistence.tables import TRADE_COLUMNS

    benchmark.group = "decode[1000]"
    with db.pool.connection() as conn:  # a library session (UTC), as the layer decodes
        rows = conn.execute(queries.SELECT_PENDING_TRADES).fetchall()
    build = trade_from_row
    if variant == "as_fetched":
        build = row_decoder(
            Trade,
            TRADE_COLUMNS,
            schwab_instruction=by_value(Instruction),
            status=by_value(TradeStatus),
        )
    built = benchmark(lambda: [build(row, Trade) for row in rows])
    assert len(built) == PENDING
