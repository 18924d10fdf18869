"""The layer's point calls against raw psycopg, paired: wall time and the client's CPU time.

    python -m bench.paired_calls [--rounds 60]

``bench.compare``'s get groups, short and alone (60 rounds of 200 gets, sync and async, the
layer on a pool of 8, raw psycopg on one connection, each round's variants in a shuffled
order), plus ``insert_one`` (50 per round). Printed per pair: the median per-round ratio of wall
time with its 10th-90th percentiles, each side's median per call, and the same for the process's
CPU time (``time.process_time``): the layer's own cost, which the server's share of the wall
time leaves out. Run from two checkouts in turn (``PYTHONPATH=<checkout>``) to compare them.
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
from bench.compare import spread
from bench.conftest import make_trades
from persistence import AsyncDatabase, Database, queries
from persistence.converter import trade_params
from tests.support import admin_url, migrated_database

GETS, INSERTS = 200, 50


def _ratios(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """The median of the per-round ratios a / b and their 10th and 90th percentiles."""
    return spread([x / y for x, y in zip(a, b, strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.paired_calls", description=__doc__)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    run = loop.run_until_complete
    with migrated_database(admin_url(), "persistence_paired") as url:
        db = Database.connect(url, min_size=workloads.POOL, max_size=workloads.POOL)
        adb = run(AsyncDatabase.connect(url, min_size=workloads.POOL, max_size=workloads.POOL))
        raw = psycopg.connect(url, autocommit=True)
        araw = run(psycopg.AsyncConnection.connect(url, autocommit=True))
        stored = make_trades(5_000)
        db.trades.insert_many(stored)
        keys = [(t.tx_hash, t.log_index) for t in stored]

        def raw_get(ks: list[Any]) -> None:
            for tx_hash, log_index in ks:
                params = {"tx_hash": tx_hash, "log_index": log_index}
                raw.execute(queries.SELECT_TRADE_BY_KEY, params).fetchone()

        def layer_get(ks: list[Any]) -> None:
            for k in ks:
                db.trades.get(*k)

        async def alayer_get(ks: list[Any]) -> None:
            for k in ks:
                await adb.trades.get(*k)

        def raw_insert(ts: list[Any]) -> None:
            for trade in ts:
                raw.execute(queries.INSERT_TRADE, trade_params(trade)).fetchone()

        def layer_insert(ts: list[Any]) -> None:
            for trade in ts:
                db.trades.insert(trade)

        pairs: dict[str, tuple[int, Callable[[list[Any]], Any], Callable[[list[Any]], Any]]] = {
            "get, sync": (GETS, layer_get, raw_get),
            "get, async": (
                GETS,
                lambda ks: run(alayer_get(ks)),
                lambda ks: run(workloads.get_psycopg(araw, ks)),
            ),
            "insert_one, sync": (INSERTS, layer_insert, raw_insert),
        }
        wall: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            chosen = random.sample(keys, GETS)
            batches = [
                (f"{name} {side}", count, work)
                for name, (count, layer, baseline) in pairs.items()
                for side, work in (("layer", layer), ("raw", baseline))
            ]
            random.shuffle(batches)
            for variant, count, work in batches:
                given = chosen if count == GETS else make_trades(count)
                started, used = time.perf_counter(), time.process_time()
                work(given)
                wall.setdefault(variant, []).append((time.perf_counter() - started) / count)
                cpu.setdefault(variant, []).append((time.process_time() - used) / count)
        print("| call | wall ratio (10th-90th) | layer / raw µs | CPU ratio | layer / raw CPU µs |")
        print("|---|---|---|---|---|")
        for name in pairs:
            layer_wall, raw_wall = wall[f"{name} layer"], wall[f"{name} raw"]
            layer_cpu, raw_cpu = cpu[f"{name} layer"], cpu[f"{name} raw"]
            median, low, high = _ratios(layer_wall, raw_wall)
            sides = (layer_wall, raw_wall, layer_cpu, raw_cpu)
            micros = [statistics.median(side) * 1e6 for side in sides]
            print(
                f"| {name} | {median:.3f} ({low:.3f}-{high:.3f}) | {micros[0]:.1f} / "
                f"{micros[1]:.1f} | {_ratios(layer_cpu, raw_cpu)[0]:.3f} | {micros[2]:.1f} / "
                f"{micros[3]:.1f} |"
            )
        db.close()
        raw.close()
        run(adb.close())
        run(araw.close())
    loop.close()


if __name__ == "__main__":
    main()
