"""Paired, interleaved comparisons of the layer with its baselines, with their spread.

    python -m bench.compare [--rounds 30]

Each round runs one batch of every variant, in a shuffled order, on the same server at the
same moment; the ratio to the baseline is taken within the round, so drift of the machine
between rounds cancels out. Printed: the median ratio and its 10th-90th percentile range over
the rounds, as a Markdown table. The server is chosen as for the tests (``TEST_DATABASE_URL``,
else the embedded one), in a throwaway database.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg

from bench import workloads
from bench.conftest import make_trades
from persistence import AsyncDatabase, Database, Instruction, Trade, TradeStatus, queries
from persistence.converter import by_value, row_decoder, trade_from_row, trade_params
from persistence.tables import TRADE_COLUMNS
from tests.support import admin_url, migrated_database

Batch = Callable[[], float]  # runs one batch, returns its seconds


def _timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure(variants: dict[str, Batch], rounds: int) -> dict[str, list[float]]:
    """Each variant's seconds per batch, round by round: every round runs one batch of each
    variant, in a shuffled order."""
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        order = list(variants)
        random.shuffle(order)
        for variant in order:
            times[variant].append(variants[variant]())
    return times


def spread(ratios: list[float]) -> tuple[float, float, float]:
    """The median of per-round ratios and their 10th and 90th percentiles."""
    ordered = sorted(ratios)
    low, high = ordered[len(ordered) // 10], ordered[-1 - len(ordered) // 10]
    return statistics.median(ordered), low, high


def compare(name: str, variants: dict[str, Batch], rounds: int) -> list[str]:
    """Rows: each variant's median seconds per batch and its ratio to the first variant."""
    times = measure(variants, rounds)
    baseline = next(iter(variants))
    rows = []
    for variant, seconds in times.items():
        median, low, high = spread([s / b for s, b in zip(seconds, times[baseline], strict=True)])
        rows.append(
            f"| {name} | {variant} | {statistics.median(seconds) * 1000:.2f} ms | "
            f"{median:.3f} | {low:.3f}-{high:.3f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument(
        "--only",
        choices=["tokens", "processes"],
        help="run one group only (tokens: sealed against plain; processes: the same gets on "
        "three raw connections and the layer, round by round, then on a connection used for two "
        "batches of each round against one used for one)",
    )
    args = parser.parse_args()
    if args.only:
        with migrated_database(admin_url(), "persistence_compare") as url:
            rows = _token_rows if args.only == "tokens" else _process_rows
            print("\n".join(rows(url, args.rounds)))
        return
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    with migrated_database(admin_url(), "persistence_compare") as url:
        db = Database.connect(url, min_size=workloads.POOL, max_size=workloads.POOL)
        adb = run(AsyncDatabase.connect(url, min_size=workloads.POOL, max_size=workloads.POOL))
        raw = psycopg.connect(url, autocommit=True)
        araw = run(psycopg.AsyncConnection.connect(url, autocommit=True))
        apool = run(workloads.open_psycopg_pool(url))
        pg = run(workloads.open_asyncpg(url))
        pgpool = run(workloads.open_asyncpg_pool(url))
        stored = make_trades(10_000)
        db.trades.insert_many(stored)
        keys = [(t.tx_hash, t.log_index) for t in stored]

        def some_keys() -> list[tuple[str, int]]:
            return random.sample(keys, 200)

        def raw_insert(conn: psycopg.Connection[Any], trades: list[Any]) -> None:
            for trade in trades:
                conn.execute(queries.INSERT_TRADE, trade_params(trade)).fetchone()

        def raw_get(conn: psycopg.Connection[Any], picked: list[tuple[str, int]]) -> None:
            for tx_hash, log_index in picked:
                params = {"tx_hash": tx_hash, "log_index": log_index}
                conn.execute(queries.SELECT_TRADE_BY_KEY, params).fetchone()

        def fresh(count: int) -> Callable[[Callable[[list[Any]], Any]], Batch]:
            def batch(work: Callable[[list[Any]], Any]) -> Batch:
                def once() -> float:
                    trades = make_trades(count)
                    return _timed(lambda: work(trades))

                return once

            return batch

        def picked(work: Callable[[list[tuple[str, int]]], Any]) -> Batch:
            def once() -> float:
                chosen = some_keys()
                return _timed(lambda: work(chosen))

            return once

        def lent(
            work: Callable[[Any, list[Any]], Any], make: Callable[[], list[Any]], layer: Any = db
        ) -> Batch:
            """``work`` by raw psycopg on the connection the layer's next call takes (its pool
            lends the one returned last): both talk to one server process. On this 2-core
            machine each server process runs either beside the client or across from it, 35
            against 70 us a lookup (``python -m bench.compare --only processes``), and one process
            stays one way for seconds: raw psycopg on a connection of its own measured that.
            The deadline is off for the batch: psycopg's own wait, one call deeper. With the
            async layer, ``work`` returns a coroutine and the pool's calls are awaited."""

            def settled(result: Any) -> Any:
                return run(result) if layer is adb else result

            def once() -> float:
                items = make()
                conn = settled(layer.pool.getconn())
                deadline, conn.deadline = conn.deadline, None
                try:
                    return _timed(lambda: settled(work(conn, items)))
                finally:
                    conn.deadline = deadline
                    settled(layer.pool.putconn(conn))

            return once

        with db.pool.connection() as conn:  # a library session (UTC), as the layer decodes
            pending = conn.execute(queries.SELECT_PENDING_TRADES + " LIMIT 1000").fetchall()
        as_fetched = row_decoder(
            Trade,
            TRADE_COLUMNS,
            schwab_instruction=by_value(Instruction),
            status=by_value(TradeStatus),
        )

        def decode(build: Callable[[Any, Any], Trade]) -> Batch:
            return lambda: _timed(lambda: [build(row, Trade) for row in pending])

        rows = ["| group | variant | median per batch | ratio to first | 10th-90th pct |"]
        rows.append("|---|---|---|---|---|")
        rows += compare(
            "get, 200 sequential (sync)",
            {
                "raw_psycopg": lent(raw_get, some_keys),
                "persistence": picked(lambda ks: [db.trades.get(*k) for k in ks]),
                "raw_psycopg_own_connection": picked(lambda ks: raw_get(raw, ks)),
            },
            args.rounds,
        )
        rows += compare(
            "decode 1,000 rows into Trades",
            {"as_fetched": decode(as_fetched), "utc_normalised": decode(trade_from_row)},
            args.rounds,
        )
        rows += compare(
            "insert_one, 100 sequential (sync)",
            {
                "raw_psycopg": lent(raw_insert, lambda: make_trades(100)),
                "persistence": fresh(100)(lambda ts: [db.trades.insert(t) for t in ts]),
                "raw_psycopg_own_connection": fresh(100)(lambda ts: raw_insert(raw, ts)),
            },
            args.rounds,
        )
        rows += compare(
            "async_get, 200 sequential",
            {
                "raw_psycopg_async": lent(workloads.get_psycopg, some_keys, adb),
                "persistence_async": picked(lambda ks: run(workloads.get_layer(adb, ks))),
                "raw_psycopg_async_own_connection": picked(
                    lambda ks: run(workloads.get_psycopg(araw, ks))
                ),
                "asyncpg": picked(lambda ks: run(workloads.get_asyncpg(pg, ks))),
            },
            args.rounds,
        )
        rows += compare(
            "async_concurrent_insert, 1,000 by 64 tasks on 8 connections",
            {
                "asyncpg": fresh(1_000)(lambda ts: run(workloads.insert_asyncpg(pgpool, ts))),
                "persistence_async": fresh(1_000)(lambda ts: run(workloads.insert_layer(adb, ts))),
                "raw_psycopg_async": fresh(1_000)(
                    lambda ts: run(workloads.insert_psycopg(apool, ts))
                ),
                "persistence_sync_8_threads": fresh(1_000)(
                    lambda ts: workloads.insert_sync_threads(db, ts)
                ),
            },
            max(5, args.rounds // 3),
        )
        print("\n".join(rows))
        for closing in (adb.close(), araw.close(), apool.close(), pg.close(), pgpool.close()):
            run(closing)
        raw.close()
        db.close()
    loop.close()


def _process_rows(url: str, rounds: int) -> list[str]:
    """200 gets on each of three raw psycopg connections (three server processes) and on the
    layer, round by round: which process answers decides more than which client asks."""
    rows = [
        "| round | raw, connection 1 | raw, connection 2 | raw, connection 3 | the layer |",
        "|---|---|---|---|---|",
    ]
    with Database.connect(url, min_size=1, max_size=1) as db:
        stored = make_trades(1_000)
        db.trades.insert_many(stored)
        keys = [(t.tx_hash, t.log_index) for t in stored[:200]]
        raws = [psycopg.connect(url, autocommit=True) for _ in range(3)]

        def raw(conn: psycopg.Connection[Any]) -> float:
            return _timed(
                lambda: [
                    conn.execute(
                        queries.SELECT_TRADE_BY_KEY, {"tx_hash": h, "log_index": i}
                    ).fetchone()
                    for h, i in keys
                ]
            )

        for number in range(1, rounds + 1):
            times = [raw(conn) for conn in raws]
            times.append(_timed(lambda: [db.trades.get(*k) for k in keys]))
            rows.append(f"| {number} | " + " | ".join(f"{t * 1000:.2f} ms" for t in times) + " |")
        # how often a process is used moves it: connection 1 takes two batches of each shuffled
        # round, connection 2 one, as the layer's connection and raw psycopg's own do here
        shares: dict[str, list[float]] = {"first": [], "again": [], "other": []}
        for _ in range(rounds):
            order = list(shares)
            random.shuffle(order)
            for turn in order:
                shares[turn].append(raw(raws[1] if turn == "other" else raws[0]))
        twice = statistics.median(shares["first"] + shares["again"]) * 1000
        once = statistics.median(shares["other"]) * 1000
        rows += [
            "",
            "| raw psycopg, 200 gets | batches per round | median |",
            "|---|---|---|",
            f"| connection 1 | 2 | {twice:.2f} ms |",
            f"| connection 2 | 1 | {once:.2f} ms |",
        ]
        for conn in raws:
            conn.close()
    return rows


def _token_rows(url: str, rounds: int) -> list[str]:
    """save and load of the Schwab tokens, sealed against plain, on one pooled connection."""
    from bench.test_tokens import AUTH, KEYS, PLAIN_SELECT, PLAIN_UPSERT, _fields, _plain
    from persistence.operations import NONE, Query

    rows = [
        "| group | variant | median per batch | ratio to first | 10th-90th pct |",
        "|---|---|---|---|---|",
    ]
    with Database.connect(url, min_size=1, max_size=1, token_keys=KEYS) as db:
        plain_save = Query(PLAIN_UPSERT, _fields(AUTH), fetch=NONE)

        def loads(sealed: bool) -> Batch:
            def once() -> float:
                if sealed:
                    db.schwab_auth.save(AUTH)
                    return _timed(lambda: [db.schwab_auth.load() for _ in range(200)])
                db._run(plain_save)
                select = Query(PLAIN_SELECT, decode=_plain)
                return _timed(lambda: [db._run(select) for _ in range(200)])

            return once

        def saves(sealed: bool) -> Batch:
            if sealed:
                return lambda: _timed(lambda: [db.schwab_auth.save(AUTH) for _ in range(50)])
            return lambda: _timed(lambda: [db._run(plain_save) for _ in range(50)])

        rows += compare(
            "auth load, 200 sequential", {"plain": loads(False), "sealed": loads(True)}, rounds
        )
        rows += compare(
            "auth save, 50 sequential", {"plain": saves(False), "sealed": saves(True)}, rounds
        )
    return rows


if __name__ == "__main__":
    main()
