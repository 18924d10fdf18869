"""Where a point operation's time goes: the layer's parts, against raw psycopg, per call.

    python -m bench.profile_calls [--calls 1000] [--callgrind] [--cprofile SCENARIO]

Each scenario runs one part of a call in a loop: the whole call on raw psycopg and on the
layer (``get`` and ``insert_one``, sync and async), and the layer's parts alone: building the
operation, the repository's bound method, the pool's checkout and return, its idle check, the
client-side deadline's override of ``wait``, the runner on a held connection, the row decode,
the sync-rep bookkeeping; and bench.compare's concurrent insert (64 tasks on 8 connections,
raw and the layer, against the sync layer's 8 threads), per insert; and the event store's
one-event append (raw psycopg with an identity ``INSERT`` and with the layer's statement, the
layer, its build, ``NewEvent`` alone). Printed as a Markdown
table, one row per scenario:

- ``µs/call``: the best of ``--repeats`` timed loops of ``--calls`` calls (the least disturbed
  by other work on the machine; a part that waits for the server keeps that wait's noise);
- with ``--callgrind``, ``Ir/call``: the instructions the client process executes per call,
  counted by valgrind's callgrind in two runs of the scenario (``--calls`` and twice that) and
  divided by the difference, so that start-up and set-up cancel out. The count is
  deterministic to a fraction of a percent and leaves the server out: it measures the
  client-side cost, which is what the layer adds.

``--cprofile SCENARIO`` prints cProfile's top functions by own time for one scenario instead.
The server is chosen as for the tests (``TEST_DATABASE_URL``, else the embedded one); the
scenarios run in a throwaway database holding 1,000 trades.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from itertools import count, cycle
from typing import Any

import psycopg

from bench import es_baselines as es
from bench import workloads
from bench.conftest import make_trades
from persistence import AsyncDatabase, Database, queries
from persistence.connection import AsyncDeadlineConnection, DeadlineConnection, SyncRep
from persistence.converter import trade_from_row, trade_params
from persistence.operations import event_store as event_ops
from persistence.operations import trades as trade_ops
from persistence.queries import event_store as event_sql
from persistence.repositories import TradeRepository
from persistence.runners import arun_on, run_on
from tests.support import admin_url, migrated_database

STORED = 1_000  # trades in the table; the get scenarios cycle through their keys
WARM_UP = 50  # calls before the counted ones: prepared statements, caches, the pool's first use
Loop = Callable[[int], None]  # runs n calls


class Env:
    """What the scenarios share in one process: the database's URL, the stored keys, fresh
    trades to insert, and an event loop; ``stack`` closes what the scenarios open."""

    def __init__(
        self, url: str, keys: list[tuple[str, int]], stack: ExitStack, inserts: int
    ) -> None:
        self.url = url
        self.keys = keys
        self.stack = stack
        self.inserts = inserts  # fresh trades an insert scenario needs
        self.loop = asyncio.new_event_loop()
        stack.callback(self.loop.close)

    def fresh(self) -> Iterator[Any]:
        return iter(make_trades(self.inserts))

    def db(self) -> Database:
        return self.stack.enter_context(Database.connect(self.url, min_size=1, max_size=1))

    def adb(self) -> AsyncDatabase:
        adb = self.loop.run_until_complete(AsyncDatabase.connect(self.url, min_size=1, max_size=1))
        self.stack.callback(lambda: self.loop.run_until_complete(adb.close()))
        return adb

    def raw(self) -> psycopg.Connection[Any]:
        return self.stack.enter_context(psycopg.connect(self.url, autocommit=True))

    def araw(self) -> psycopg.AsyncConnection[Any]:
        conn = self.loop.run_until_complete(
            psycopg.AsyncConnection.connect(self.url, autocommit=True)
        )
        self.stack.callback(lambda: self.loop.run_until_complete(conn.close()))
        return conn

    def run_async(self, step: Callable[[], Awaitable[Any]]) -> Loop:
        """A loop of n awaited ``step()`` calls, in one turn of the event loop."""

        async def many(n: int) -> None:
            for _ in range(n):
                await step()

        return lambda n: self.loop.run_until_complete(many(n))


def _calls(step: Callable[[], Any]) -> Loop:
    def loop(n: int) -> None:
        for _ in range(n):
            step()

    return loop


def _params(keys: list[tuple[str, int]]) -> Iterator[dict[str, Any]]:
    return cycle([{"tx_hash": h, "log_index": i} for h, i in keys])


def _done() -> Iterator[Any]:
    """A generator that needs no I/O: ``wait`` returns at once."""
    return
    yield


# --- the scenarios: each returns a loop of calls ----------------------------------------------


def raw_get(env: Env) -> Loop:
    raw, params = env.raw(), _params(env.keys)
    return _calls(lambda: raw.execute(queries.SELECT_TRADE_BY_KEY, next(params)).fetchone())


def layer_get(env: Env) -> Loop:
    get, keys = env.db().trades.get, cycle(env.keys)
    return _calls(lambda: get(*next(keys)))


def build_get(env: Env) -> Loop:
    keys = cycle(env.keys)
    return _calls(lambda: trade_ops.get(*next(keys)))


def bound_get(env: Env) -> Loop:
    """The repository's bound method with a runner that does nothing: build + the binding."""
    get, keys = TradeRepository(lambda op: None).get, cycle(env.keys)
    return _calls(lambda: get(*next(keys)))


def checkout(env: Env) -> Loop:
    """The pool's checkout (with its idle check) and return, as ``Database.run`` does them."""
    db = env.db()
    pool = db.pool
    return _calls(lambda: pool.putconn(db._getconn()))


def idle_check(env: Env) -> Loop:
    """The pool's check hook alone (``connection.pool_check``): one poll of the idle socket."""
    db = env.db()
    check = db.pool._check
    conn = db.pool.getconn()
    env.stack.callback(db.pool.putconn, conn)
    assert check is not None
    return _calls(lambda: check(conn))


def deadline_wait(env: Env) -> Loop:
    """``DeadlineConnection.wait`` with the deadline set, on a generator that needs no I/O."""
    db = env.db()
    conn = db.pool.getconn()
    env.stack.callback(db.pool.putconn, conn)
    assert isinstance(conn, DeadlineConnection) and conn.deadline
    return _calls(lambda: conn.wait(_done()))


def plain_wait(env: Env) -> Loop:
    """psycopg's own ``wait``, unbounded, on the same generator: the floor of deadline_wait."""
    raw = env.raw()
    return _calls(lambda: raw.wait(_done()))


def run_on_get(env: Env) -> Loop:
    """The runner on a held pooled connection: execute, fetch, decode (no pool, no settle)."""
    db = env.db()
    conn = db.pool.getconn()
    env.stack.callback(db.pool.putconn, conn)
    ops = cycle([trade_ops.get(h, i) for h, i in env.keys])
    return _calls(lambda: run_on(conn, next(ops)))


def run_on_get_binary(env: Env) -> Loop:
    """run_on_get with the row in PostgreSQL's binary format (``Query(binary=True)``)."""
    db = env.db()
    conn = db.pool.getconn()
    env.stack.callback(db.pool.putconn, conn)
    built = [trade_ops.get(h, i) for h, i in env.keys]
    for op in built:
        op.binary = True
    ops = cycle(built)
    return _calls(lambda: run_on(conn, next(ops)))


def decode(env: Env) -> Loop:
    with psycopg.connect(env.url) as conn:
        row = conn.execute(queries.SELECT_TRADE_BY_KEY, next(_params(env.keys))).fetchone()
    return _calls(lambda: trade_from_row(row))


def sync_rep(env: Env) -> Loop:
    """What ``Database.run`` asks of the connection's SyncRep on a call that raised nothing."""
    rep = SyncRep()

    def call() -> None:
        rep.note(None, None)
        rep.must_confirm()
        rep.take()
        rep.take()

    return _calls(call)


def raw_insert(env: Env) -> Loop:
    raw, trades = env.raw(), env.fresh()
    insert = queries.INSERT_TRADE
    return _calls(lambda: raw.execute(insert, trade_params(next(trades))).fetchone())


def layer_insert(env: Env) -> Loop:
    insert, trades = env.db().trades.insert, env.fresh()
    return _calls(lambda: insert(next(trades)))


def build_insert(env: Env) -> Loop:
    trades = cycle(make_trades(100))
    return _calls(lambda: trade_ops.insert(next(trades)))


def params_insert(env: Env) -> Loop:
    trades = cycle(make_trades(100))
    return _calls(lambda: trade_params(next(trades)))


def araw_get(env: Env) -> Loop:
    conn, params = env.araw(), _params(env.keys)

    async def step() -> Any:
        return await (await conn.execute(queries.SELECT_TRADE_BY_KEY, next(params))).fetchone()

    return env.run_async(step)


def alayer_get(env: Env) -> Loop:
    get, keys = env.adb().trades.get, cycle(env.keys)
    return env.run_async(lambda: get(*next(keys)))


def acheckout(env: Env) -> Loop:
    adb = env.adb()
    pool = adb.pool

    async def step() -> None:
        await pool.putconn(await adb._getconn())

    return env.run_async(step)


def aidle_check(env: Env) -> Loop:
    adb = env.adb()
    check = adb.pool._check
    conn = env.loop.run_until_complete(adb.pool.getconn())
    env.stack.callback(lambda: env.loop.run_until_complete(adb.pool.putconn(conn)))
    assert check is not None
    return env.run_async(lambda: check(conn))  # type: ignore[arg-type, return-value]


def adeadline_wait(env: Env) -> Loop:
    adb = env.adb()
    conn = env.loop.run_until_complete(adb.pool.getconn())
    env.stack.callback(lambda: env.loop.run_until_complete(adb.pool.putconn(conn)))
    assert isinstance(conn, AsyncDeadlineConnection) and conn.deadline
    return env.run_async(lambda: conn.wait(_done()))


def aplain_wait(env: Env) -> Loop:
    conn = env.araw()
    return env.run_async(lambda: conn.wait(_done()))


def arun_on_get(env: Env) -> Loop:
    adb = env.adb()
    conn = env.loop.run_until_complete(adb.pool.getconn())
    env.stack.callback(lambda: env.loop.run_until_complete(adb.pool.putconn(conn)))
    ops = cycle([trade_ops.get(h, i) for h, i in env.keys])
    return env.run_async(lambda: arun_on(conn, next(ops)))


def araw_insert(env: Env) -> Loop:
    conn, trades = env.araw(), env.fresh()

    async def step() -> Any:
        cursor = await conn.execute(queries.INSERT_TRADE, trade_params(next(trades)))
        return await cursor.fetchone()

    return env.run_async(step)


def alayer_insert(env: Env) -> Loop:
    insert, trades = env.adb().trades.insert, env.fresh()
    return env.run_async(lambda: insert(next(trades)))


def _batches(env: Env, insert_all: Callable[[list[Any]], Any]) -> Loop:
    """n inserts at once, spread by ``insert_all`` over the workers of bench.compare's group."""
    trades = env.fresh()
    return lambda n: insert_all([next(trades) for _ in range(n)])


def araw_tasks_insert(env: Env) -> Loop:
    pool = env.loop.run_until_complete(workloads.open_psycopg_pool(env.url))
    env.stack.callback(lambda: env.loop.run_until_complete(pool.close()))
    return _batches(env, lambda ts: env.loop.run_until_complete(workloads.insert_psycopg(pool, ts)))


def alayer_tasks_insert(env: Env) -> Loop:
    db = env.loop.run_until_complete(workloads.layer_async(env.url))[0]
    env.stack.callback(lambda: env.loop.run_until_complete(db.close()))
    return _batches(env, lambda ts: env.loop.run_until_complete(workloads.insert_layer(db, ts)))


def layer_threads_insert(env: Env) -> Loop:
    pool = workloads.POOL
    db = env.stack.enter_context(Database.connect(env.url, min_size=pool, max_size=pool))
    return _batches(env, lambda ts: workloads.insert_sync_threads(db, ts))


def _appends(append: Callable[[str, int], Any]) -> Loop:
    """Single events to one fresh aggregate, sequences from 1 (bench.events' appends, 1 thread)."""
    aggregate, sequences = f"profile-{es.run_prefix()}", count(1)
    return _calls(lambda: append(aggregate, next(sequences)))


def raw_append(env: Env) -> Loop:
    raw = env.raw()
    es.raw_setup(raw)
    return _appends(lambda aggregate, sequence: es.raw_append(raw, aggregate, sequence, 1))


def raw_append_next(env: Env) -> Loop:
    raw = env.raw()

    def append(aggregate: str, sequence: int) -> Any:
        params = {
            "aggregate_type": es.AGGREGATE_TYPE,
            "aggregate_id": aggregate,
            "expected_sequence": sequence - 1,
            "event_type": es.EVENT_TYPE,
            "event_version": "1",
            "payload": json.dumps(es.payload(sequence)),
            "metadata": json.dumps(es.METADATA),
        }
        if sequence == 1:  # a new aggregate's first event: append_events(), as the layer does
            params["events"] = json.dumps([[es.EVENT_TYPE, "1", es.payload(1), es.METADATA]])
            return raw.execute(event_sql.APPEND_EVENTS, params).fetchone()
        return raw.execute(event_sql.APPEND_NEXT, params).fetchone()

    return _appends(append)


def layer_append(env: Env) -> Loop:
    db = env.db()
    return _appends(lambda aggregate, sequence: es.ours_append(db, aggregate, sequence, 1))


def build_append(env: Env) -> Loop:
    append = event_ops.append_alone
    return _appends(
        lambda aggregate, sequence: append(
            es.AGGREGATE_TYPE, aggregate, es.new_events(sequence, 1), expected_sequence=sequence - 1
        )
    )


def new_event(env: Env) -> Loop:
    return _appends(lambda aggregate, sequence: es.new_events(sequence, 1))


# (section, scenario, what it is); a section's first scenario is the whole call on raw psycopg
SCENARIOS: list[tuple[str, Callable[[Env], Loop], str]] = [
    ("get, sync", raw_get, "raw psycopg: execute + fetchone"),
    ("get, sync", layer_get, "**the layer: `db.trades.get`**"),
    ("get, sync", bound_get, "repository method + build, no I/O"),
    ("get, sync", build_get, "build: key check, parameters, `Query`"),
    ("get, sync", checkout, "pool checkout + return (with the idle check)"),
    ("get, sync", idle_check, "idle check alone (`pool_check`: one poll)"),
    ("get, sync", run_on_get, "runner on a held connection: execute, fetch, decode"),
    ("get, sync", run_on_get_binary, "the same, the row in binary format"),
    ("get, sync", decode, "row decode alone (`trade_from_row`)"),
    ("get, sync", deadline_wait, "`wait` with the deadline (per wait, no I/O)"),
    ("get, sync", plain_wait, "psycopg's own `wait` (per wait, no I/O)"),
    ("get, sync", sync_rep, "sync-rep bookkeeping (note, must_confirm, take x2)"),
    ("insert_one, sync", raw_insert, "raw psycopg: params + execute + fetchone"),
    ("insert_one, sync", layer_insert, "**the layer: `db.trades.insert`**"),
    ("insert_one, sync", build_insert, "build: type check, `trade_params`, `Query`"),
    ("insert_one, sync", params_insert, "`trade_params` alone (raw pays it too)"),
    ("get, async", araw_get, "raw psycopg async: execute + fetchone"),
    ("get, async", alayer_get, "**the layer: `await db.trades.get`**"),
    ("get, async", acheckout, "pool checkout + return (with the idle check)"),
    ("get, async", aidle_check, "idle check alone"),
    ("get, async", arun_on_get, "runner on a held connection: execute, fetch, decode"),
    ("get, async", adeadline_wait, "`wait` with the deadline (per wait, no I/O)"),
    ("get, async", aplain_wait, "psycopg's own `wait` (per wait, no I/O)"),
    ("insert_one, async", araw_insert, "raw psycopg async: params + execute + fetchone"),
    ("insert_one, async", alayer_insert, "**the layer: `await db.trades.insert`**"),
    ("append, sync", raw_append, "raw psycopg: one-row INSERT, identity position"),
    ("append, sync", raw_append_next, "raw psycopg: the layer's statement, dict parameters"),
    ("append, sync", layer_append, "**the layer: `db.event_store.append`, one event**"),
    ("append, sync", build_append, "build: checks, JSON, `Steps` (with `NewEvent`)"),
    ("append, sync", new_event, "`NewEvent` alone (its checks; the caller builds it)"),
    ("insert, 64 tasks on 8 connections", araw_tasks_insert, "raw psycopg async + psycopg_pool"),
    ("insert, 64 tasks on 8 connections", alayer_tasks_insert, "**the layer, async**"),
    ("insert, 64 tasks on 8 connections", layer_threads_insert, "the sync layer, 8 threads"),
]
BY_NAME = {scenario.__name__: scenario for _, scenario, _ in SCENARIOS}


@contextmanager
def _database() -> Iterator[tuple[str, list[tuple[str, int]]]]:
    with migrated_database(admin_url(), "persistence_profile") as url:
        stored = make_trades(STORED)
        with Database.connect(url, min_size=1, max_size=1) as db:
            db.trades.insert_many(stored)
        yield url, [(t.tx_hash, t.log_index) for t in stored]


def _timed(env: Env, scenario: Callable[[Env], Loop], calls: int, repeats: int) -> float:
    """The best of ``repeats`` timed loops, in µs per call."""
    loop = scenario(env)
    loop(WARM_UP)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        loop(calls)
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def _child(name: str, url: str, keys_file: str, calls: int) -> None:
    """The process callgrind counts: set up one scenario, warm it up, run ``calls`` calls."""
    with open(keys_file) as lines:
        keys = [(h, int(i)) for h, i in (line.split() for line in lines)]
    with ExitStack() as stack:
        loop = BY_NAME[name](Env(url, keys, stack, WARM_UP + calls))
        loop(WARM_UP)
        loop(calls)


def _instructions(name: str, url: str, keys_file: str, calls: int) -> int:
    """Instructions the client executed in a child running ``calls`` calls of ``name``."""
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}/callgrind.out",
                sys.executable,
                "-m",
                "bench.profile_calls",
                "--child",
                name,
                url,
                keys_file,
                str(calls),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            check=True,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no count from callgrind: {done.stderr[-2000:]}")
    return int(found.group(1))


def _per_call(name: str, url: str, keys_file: str, calls: int) -> float:
    once = _instructions(name, url, keys_file, calls)
    twice = _instructions(name, url, keys_file, 2 * calls)
    return (twice - once) / calls


def _profile(env: Env, name: str, calls: int) -> None:
    loop = BY_NAME[name](env)
    loop(WARM_UP)
    profiler = cProfile.Profile()
    profiler.runcall(loop, calls)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_calls", description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    parser.add_argument("--cprofile", choices=sorted(BY_NAME), help="profile one scenario")
    parser.add_argument("--only", help="run the scenarios whose name contains this")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, url, keys_file, calls = args.child
        _child(name, url, keys_file, int(calls))
        return
    chosen = [s for s in SCENARIOS if args.only is None or args.only in s[1].__name__]
    with _database() as (url, keys), ExitStack() as stack, tempfile.NamedTemporaryFile("w") as f:
        f.write("".join(f"{h} {i}\n" for h, i in keys))
        f.flush()
        env = Env(url, keys, stack, WARM_UP + args.calls * max(args.repeats, 1))
        if args.cprofile:
            _profile(env, args.cprofile, args.calls)
            return
        count = partial(_per_call, url=url, keys_file=f.name, calls=args.calls)
        print("| operation | scenario | what | µs/call (best) | Ir/call |")
        print("|---|---|---|---|---|")
        for section, scenario, what in chosen:
            micros = _timed(env, scenario, args.calls, args.repeats)
            ir = f"{count(scenario.__name__):,.0f}" if args.callgrind else ""
            print(f"| {section} | {scenario.__name__} | {what} | {micros:.2f} | {ir} |", flush=True)


if __name__ == "__main__":
    main()
