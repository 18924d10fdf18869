"""The trade-batching model: record_fill and the event queue, against the bot's SQLite store.

The SQLite side is the bot's own scheme (``bench.baselines``): a lease row per symbol taken
with INSERT OR IGNORE, a 5-minute expiry, a busy timeout, and "database is locked" read as
"already stored". Each round records fresh fills; every tenth fill a worker also completes its
symbol's pending execution, so that executions keep starting. After the rounds, fills lost and
fills stored twice are counted on both sides and kept in the run's ``extra_info``.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.baselines import (
    sqlite_batching_connect,
    sqlite_complete_pending,
    sqlite_record_fill,
)
from persistence import Database, Fill, InvalidTransition

PER_WORKER = 50
AMOUNTS = ("0.37", "0.5", "0.13", "1.25", "0.0625")
SHAPES = {  # name: (threads, symbols)
    "1 thread": (1, 1),
    "8 threads, 1 symbol": (8, 1),
    "8 threads, 8 symbols": (8, 8),
}
_serial = itertools.count()


def _fills(workers: int, symbols: int) -> list[list[tuple[Any, ...]]]:
    """Fresh fills per worker: (tx_hash, log_index, symbol, amount, direction, price)."""
    batch = next(_serial)
    return [
        [
            (
                f"0x{batch:016x}{worker:016x}{index:032x}",
                0,
                f"SYM{worker % symbols}",
                AMOUNTS[index % len(AMOUNTS)],
                "SELL" if index % 4 == 3 else "BUY",
                "150.25",
            )
            for index in range(PER_WORKER)
        ]
        for worker in range(workers)
    ]


@pytest.fixture(scope="module")
def sqlite_batching_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-batching") / "bot.db"
    sqlite_batching_connect(path).close()
    return path


def _persistence_worker(db: Database, rows: list[tuple[Any, ...]]) -> None:
    for position, (tx_hash, log_index, symbol, amount, direction, price) in enumerate(rows, 1):
        db.fills.record(
            Fill(tx_hash, log_index, symbol, Decimal(amount), direction, Decimal(price))
        )
        if not position % 10:
            for execution in db.executions.pending(symbol):
                with contextlib.suppress(InvalidTransition):  # another worker was first
                    db.executions.complete(execution.id, order_id="X", price_cents=1)


def _sqlite_worker(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    for position, (tx_hash, log_index, symbol, amount, direction, price) in enumerate(rows, 1):
        sqlite_record_fill(
            conn, (tx_hash, log_index, symbol, float(amount), direction, float(price))
        )
        if not position % 10:
            with contextlib.suppress(sqlite3.OperationalError):
                sqlite_complete_pending(conn, symbol)


def _stored_keys(variant: str, url: str, path: Path) -> list[str]:
    if variant == "persistence":
        with psycopg.connect(url) as conn:
            return [row[0] for row in conn.execute("SELECT tx_hash FROM onchain_trades")]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[0] for row in conn.execute("SELECT tx_hash FROM onchain_trades")]


@pytest.mark.parametrize("variant", ["persistence", "sqlite"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_record_fill(
    benchmark: Any, variant: str, shape: str, db: Database, url: str, sqlite_batching_path: Path
) -> None:
    """Record 50 fills per worker, one transaction each (a round is threads x 50 fills)."""
    benchmark.group = f"record_fill[{shape}]"
    threads, symbols = SHAPES[shape]
    connections = [sqlite_batching_connect(sqlite_batching_path) for _ in range(threads)]
    pending: list[list[tuple[Any, ...]]] = []
    sent: list[str] = []

    def prepare() -> None:
        pending[:] = _fills(threads, symbols)
        sent.extend(row[0] for rows in pending for row in rows)

    def work(worker: int) -> None:
        if variant == "persistence":
            _persistence_worker(db, pending[worker])
        else:
            _sqlite_worker(connections[worker], pending[worker])

    with ThreadPoolExecutor(threads) as pool:
        benchmark.pedantic(
            lambda: list(pool.map(work, range(threads))), setup=prepare, rounds=5, warmup_rounds=1
        )
    for conn in connections:
        conn.close()
    stored = _stored_keys(variant, url, sqlite_batching_path)
    lost = len(set(sent) - set(stored))
    duplicated = len(stored) - len(set(stored))
    benchmark.extra_info.update(fills=len(sent), lost=lost, duplicated=duplicated)
    if variant == "persistence":
        assert (lost, duplicated) == (0, 0)


@pytest.fixture
def queued(url: str) -> Iterator[int]:
    """400 events waiting (replaced before each round)."""
    yield 400


def test_claim_and_mark(benchmark: Any, db: Database, url: str, queued: int) -> None:
    """Eight workers drain 400 queued events: claim_next and mark_processed, one transaction
    per event, as a worker that records each event's fill would."""
    benchmark.group = "queue[8 workers]"
    batch = itertools.count()

    def prepare() -> None:
        round_ = next(batch)
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO event_queue (tx_hash, log_index, block_number, payload) "
                "VALUES (%s, 0, %s, '{}')",
                [(f"0x{round_:032x}{index:032x}", index) for index in range(queued)],
            )

    claimed: list[int] = []

    def work(_: int) -> None:
        while True:
            with db.transaction() as tx:
                event = tx.events.claim_next()
                if event is None:
                    return
                tx.events.mark_processed(event.id)
                claimed.append(event.id)

    with ThreadPoolExecutor(8) as pool:
        benchmark.pedantic(
            lambda: list(pool.map(work, range(8))), setup=prepare, rounds=5, warmup_rounds=1
        )
    assert len(claimed) == len(set(claimed))  # no event claimed twice
    assert db.events.count_unprocessed() == 0
