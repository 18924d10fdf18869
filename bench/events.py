"""The event store's targets (issue #27), paired and interleaved as ``bench.compare`` runs them.

    python -m bench.events [--rounds 15] [--only GROUP]

Groups: ``appends`` (8 threads, single events, 8 aggregates), ``batch`` (appends of 100
events), ``read`` (a catch-up of --population events from position 0), ``load`` (an aggregate
of 1,000 events), ``wakeup`` (append return to ``wait_for`` return, p50/p99), and ``lag`` (a
gap-free reader's lag while a transaction sits idle in another database, with and without the
idle-in-transaction bound). Each round runs one batch of every variant in a shuffled order; a
speed ratio (baseline seconds / persistence seconds) is taken within the round, and its median
and 10th-90th percentiles over the rounds are printed beside the target. The server is chosen
as for the tests (``TEST_DATABASE_URL``, else the embedded one), in throwaway databases.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import queue
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench import es_baselines as es
from bench.compare import Batch, _timed, measure, spread
from persistence import Database, Settings
from persistence.connect import build_conninfo
from tests.support import (
    admin_url,
    create_database,
    drop_database,
    migrated_database,
    with_database,
)

HEADER = [
    "| group | variant | median per batch | speed of persistence vs it (10th-90th pct) | target |",
    "|---|---|---|---|---|",
]

# group -> baseline -> the speed persistence must reach against it (baseline s / persistence s)
TARGETS: dict[str, dict[str, float]] = {
    "appends": {"eventsourcing": 4.0, "sqlite": 2.5},
    "batch": {"raw_psycopg": 0.8},
    "read": {"raw_psycopg": 0.8},
    "load": {"raw_psycopg": 1 / 1.3},  # load time <= 1.3 x raw
}
WAKE_P99_TARGET = 0.020


@dataclass
class Stores:
    """Every store, opened once on one scratch database (and a SQLite file)."""

    url: str
    sqlite_dir: Path
    raw: list[psycopg.Connection[Any]] = field(default_factory=list)
    sqlite: list[Any] = field(default_factory=list)
    eventsourcing: es.EventsourcingStore | None = None
    db: Database | None = None
    population_prefix: str = ""
    population: int = 0

    @property
    def read_table(self) -> str:
        """The raw reads' table: the event store's own rows when it exists (the same rows)."""
        return "events" if self.db is not None else es.RAW_TABLE

    def close(self) -> None:
        for conn in self.raw:
            conn.close()
        for lite in self.sqlite:
            lite.close()
        if self.eventsourcing is not None:
            self.eventsourcing.close()
        if self.db is not None:
            self.db.close()


@contextlib.contextmanager
def open_stores(url: str) -> Iterator[Stores]:
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        stores = Stores(url=url, sqlite_dir=Path(tmp))
        try:
            stores.raw = [psycopg.connect(url, autocommit=True) for _ in range(es.THREADS)]
            es.raw_setup(stores.raw[0])
            path = Path(tmp) / "bot.db"
            stores.sqlite = [es.sqlite_es_connect(path) for _ in range(es.THREADS)]
            stores.eventsourcing = es.EventsourcingStore(url)
            stores.db = Database.connect(url, min_size=es.THREADS, max_size=es.THREADS)
            yield stores
        finally:
            stores.close()


def populate(stores: Stores, total: int) -> None:
    """``total`` events in every store, as aggregates of 1,000 (the first is the one loaded)."""
    prefix = es.run_prefix()
    ids = es.population_ids(prefix, total)
    raw, lite, sourcing = stores.raw[0], stores.sqlite[0], stores.eventsourcing
    assert sourcing is not None
    if stores.db is None:
        es.populate(lambda a, f, c: es.raw_append(raw, a, f, c), ids)
    else:
        db = stores.db
        es.populate(lambda a, f, c: es.ours_append(db, a, f, c), ids)
    es.populate(lambda a, f, c: es.sqlite_append(lite, a, f, c), ids)
    es.populate(sourcing.append, ids)
    raw.execute(f"ANALYZE {stores.read_table}")
    raw.execute(f"ANALYZE {es.ES_TABLE}")
    stores.population_prefix, stores.population = prefix, len(ids) * es.LOAD_SIZE


# --- the paired groups ------------------------------------------------------------------------


def appends_group(stores: Stores, per_thread: int) -> dict[str, Batch]:
    sourcing = stores.eventsourcing
    assert sourcing is not None
    appenders: dict[str, es.Appender] = {
        "eventsourcing": lambda t, a, s: sourcing.append(a, s, 1),
        "sqlite": lambda t, a, s: es.sqlite_append(stores.sqlite[t], a, s, 1),
        "raw_psycopg": lambda t, a, s: es.raw_append(stores.raw[t], a, s, 1),
    }
    if stores.db is not None:
        db = stores.db
        appenders["persistence"] = lambda t, a, s: es.ours_append(db, a, s, 1)

    def batch(append: es.Appender) -> Batch:
        return lambda: es.threaded_appends(append, es.run_prefix(), per_thread)

    return {name: batch(append) for name, append in appenders.items()}


def batch_group(stores: Stores, batches: int) -> dict[str, Batch]:
    sourcing = stores.eventsourcing
    assert sourcing is not None
    raw, lite = stores.raw[0], stores.sqlite[0]
    appends: dict[str, Callable[[str], Any]] = {
        "raw_psycopg": lambda a: es.raw_append(raw, a, 1, es.BATCH),
        "eventsourcing": lambda a: sourcing.append(a, 1, es.BATCH),
        "sqlite": lambda a: es.sqlite_append(lite, a, 1, es.BATCH),
    }
    if stores.db is not None:
        db = stores.db
        appends["persistence"] = lambda a: es.ours_append(db, a, 1, es.BATCH)

    def batch(append: Callable[[str], Any]) -> Batch:
        def once() -> float:
            ids = [f"{es.run_prefix()}-b{k}" for k in range(batches)]
            return _timed(lambda: [append(a) for a in ids])

        return once

    return {name: batch(append) for name, append in appends.items()}


def read_group(stores: Stores) -> dict[str, Batch]:
    sourcing, total = stores.eventsourcing, stores.population
    assert sourcing is not None
    raw, lite, table = stores.raw[0], stores.sqlite[0], stores.read_table

    def checked(read: Callable[[], int]) -> Batch:
        def once() -> float:
            started = time.perf_counter()
            seen = read()
            elapsed = time.perf_counter() - started
            assert seen == total, (seen, total)
            return elapsed

        return once

    group = {
        "raw_psycopg": checked(lambda: es.raw_catch_up(raw, table, total)),
        "eventsourcing": checked(lambda: sourcing.catch_up(total)),
        "sqlite": checked(lambda: es.sqlite_catch_up(lite, total)),
    }
    if stores.db is not None:
        db = stores.db
        group["persistence"] = checked(lambda: es.ours_catch_up(db, total))
    return group


def load_group(stores: Stores, loads: int) -> dict[str, Batch]:
    sourcing = stores.eventsourcing
    assert sourcing is not None
    raw, lite, table = stores.raw[0], stores.sqlite[0], stores.read_table
    target = es.population_ids(stores.population_prefix, es.LOAD_SIZE)[0]
    reads: dict[str, Callable[[], int]] = {
        "raw_psycopg": lambda: es.raw_load(raw, table, target),
        "eventsourcing": lambda: sourcing.load(target),
        "sqlite": lambda: es.sqlite_load(lite, target),
    }
    if stores.db is not None:
        db = stores.db
        reads["persistence"] = lambda: es.ours_load(db, target)

    def batch(read: Callable[[], int]) -> Batch:
        def once() -> float:
            started = time.perf_counter()
            counts = [read() for _ in range(loads)]
            elapsed = time.perf_counter() - started
            assert counts == [es.LOAD_SIZE] * loads, counts
            return elapsed

        return once

    return {name: batch(read) for name, read in reads.items()}


def rows_for(name: str, group: dict[str, Batch], rounds: int) -> list[str]:
    times = measure(group, rounds)
    rows = []
    ours = times.get("persistence")
    targets = TARGETS.get(name, {})
    for variant, seconds in times.items():
        median_ms = statistics.median(seconds) * 1000
        if ours is None or variant == "persistence":
            speed = "" if ours else "(no event store)"
        else:
            mid, low, high = spread([b / o for b, o in zip(seconds, ours, strict=True)])
            speed = f"{mid:.2f} x ({low:.2f}-{high:.2f})"
        target = ""
        if variant in targets:
            bound = targets[variant]
            target = f">= {bound:.2f} x"
            if ours is not None:
                mid = spread([b / o for b, o in zip(seconds, ours, strict=True)])[0]
                target += " hit" if mid >= bound else " MISS"
        rows.append(f"| {name} | {variant} | {median_ms:.2f} ms | {speed} | {target} |")
    return rows


# --- wake-up latency: append return to wait_for return ----------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Waker:
    """A waiter thread on ``wait(after)``, and ``cycle()``: let it into its wait, append 1-4 ms
    later, and return the seconds from ``append()`` returning to ``wait`` returning, where
    ``after`` is the position before the append (``append`` returns the new position)."""

    def __init__(self, append: Callable[[], int], wait: Callable[[int], bool]) -> None:
        self.append, self.wait = append, wait
        self.after = append()
        self.ready = threading.Event()
        self.handed: queue.Queue[float | BaseException] = queue.Queue()
        self.todo: queue.Queue[int | None] = queue.Queue()
        self.latencies: list[float] = []
        self.timeouts = 0  # waits that ended without an event readable
        self.thread = threading.Thread(target=self._waiter, daemon=True)
        self.thread.start()

    def _waiter(self) -> None:
        while (position := self.todo.get()) is not None:
            try:
                self.ready.set()
                woke = self.wait(position)
                self.handed.put(time.perf_counter() if woke else TimeoutError("wait timed out"))
            except BaseException as exc:
                self.handed.put(exc)

    def cycle(self) -> float:
        self.ready.clear()
        self.todo.put(self.after)
        self.ready.wait()
        time.sleep(random.uniform(0.001, 0.004))
        self.after = self.append()
        appended = time.perf_counter()
        woke = self.handed.get(timeout=30)
        if isinstance(woke, TimeoutError):
            self.timeouts += 1
            return math.inf
        if isinstance(woke, BaseException):
            raise woke
        self.latencies.append(woke - appended)
        return woke - appended

    def close(self) -> None:
        self.todo.put(None)
        self.thread.join(timeout=30)


def wake_latencies(
    append: Callable[[], int], wait: Callable[[int], bool], samples: int
) -> tuple[list[float], int]:
    """The latencies of ``samples`` cycles, and how many waits timed out (not in the list)."""
    waker = Waker(append, wait)
    try:
        for _ in range(samples):
            waker.cycle()
        return waker.latencies, waker.timeouts
    finally:
        waker.close()


RAW_NOTIFY_APPEND = (
    f"WITH e AS ({es.raw_insert_sql(1)}) "
    "SELECT position, pg_notify('bench_wake', position::text) FROM e"
)


def raw_wake(url: str) -> tuple[Callable[[], int], Callable[[int], bool], Callable[[], None]]:
    """The floor: an INSERT with pg_notify in its statement, a waiter on LISTEN."""
    writer = psycopg.connect(url, autocommit=True)
    listener = psycopg.connect(url, autocommit=True)
    listener.execute("LISTEN bench_wake")
    prefix, counter = es.run_prefix(), iter(range(1, 10**9))

    def append() -> int:
        row = writer.execute(RAW_NOTIFY_APPEND, es.raw_params(prefix, next(counter), 1)).fetchone()
        assert row is not None
        return int(row[0])

    def wait(after: int) -> bool:
        deadline = time.monotonic() + 5
        while (left := deadline - time.monotonic()) > 0:
            for note in listener.notifies(timeout=left, stop_after=1):
                if int(note.payload) > after:
                    return True
        return False

    def close() -> None:
        writer.close()
        listener.close()

    return append, wait, close


def ours_wake(db: Any) -> tuple[Callable[[], int], Callable[[int], bool], Callable[[], None]]:
    prefix, counter = es.run_prefix(), iter(range(1, 10**9))

    def append() -> int:
        sequence = next(counter)
        recorded = db.event_store.append(
            es.AGGREGATE_TYPE, prefix, es.new_events(sequence, 1), expected_sequence=sequence - 1
        )
        return int(recorded[-1].position)

    def wait(after: int) -> bool:
        return bool(db.event_store.wait_for(after, timeout=5))

    return append, wait, lambda: None


def wake_rows(stores: Stores, samples: int) -> list[str]:
    rows = [
        "| wake-up (append return to wait_for return) | p50 | p99 | max | timed out (5 s) | "
        "target p99 |",
        "|---|---|---|---|---|---|",
    ]
    variants = {"raw_listen_notify": raw_wake(stores.url)}
    if stores.db is not None:
        variants["persistence"] = ours_wake(stores.db)
    for name, (append, wait, close) in variants.items():
        try:
            found, timeouts = wake_latencies(append, wait, samples)
        finally:
            close()
        target = f"< {WAKE_P99_TARGET * 1000:.0f} ms" if name == "persistence" else ""
        if name == "persistence":
            hit = not timeouts and quantile(found, 0.99) < WAKE_P99_TARGET
            target += " hit" if hit else " MISS"
        rows.append(
            f"| {name} | {quantile(found, 0.5) * 1000:.2f} ms | "
            f"{quantile(found, 0.99) * 1000:.2f} ms | {quantile(found, 1.0) * 1000:.2f} ms | "
            f"{timeouts} | "
            f"{target} |"
        )
    return rows


# --- the cost of gap-free reading: a reader's lag behind an idle transaction elsewhere -------

LAG_TABLE = "bench_lag_events"
LAG_DDL = f"CREATE TABLE IF NOT EXISTS {LAG_TABLE} (position bigint PRIMARY KEY, run text)"
# the design's position (migration 0007): the transaction id << 20, plus the index within it
LAG_APPEND = (
    f"INSERT INTO {LAG_TABLE} (position, run) "
    "VALUES ((pg_current_xact_id()::text::bigint << 20) + 1, %s) RETURNING position"
)
# the reader's rule: only positions below the oldest running transaction id, shifted alike
LAG_READ = (
    f"SELECT position FROM {LAG_TABLE} WHERE run = %s AND position > %s "
    "AND position < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20) "
    "ORDER BY position LIMIT 1000"
)
HOLDER_NAME = "bench-idle-holder"
OTHERS_OLDEST_WRITE = (
    "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0) "
    "FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND application_name <> %s"
)
WRITE_EVERY = 0.02  # an event every 20 ms
POLL_EVERY = 0.005  # the reader polls every 5 ms (no notification: lag is the horizon's)


@dataclass
class LagRun:
    committed: dict[int, float] = field(default_factory=dict)
    seen: dict[int, float] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    holder: str = ""
    others: float = 0.0  # seconds: the longest write transaction of other sessions seen


def hold_idle(other_url: str, hold: float, bound: float) -> str:
    """A transaction with an xid, idle for ``hold`` s in another database, its session opened
    the library's way with ``idle_in_transaction_timeout=bound`` (0: no bound). Returns what
    became of it."""
    settings = Settings(
        url=other_url, idle_in_transaction_timeout=bound, application_name=HOLDER_NAME
    )
    conninfo = build_conninfo(settings, other_url)
    with psycopg.connect(conninfo) as conn:
        conn.execute("SELECT pg_current_xact_id()")  # a transaction id, as any writer takes
        began = time.perf_counter()
        time.sleep(hold)
        try:
            conn.commit()
            return f"committed after {time.perf_counter() - began:.2f} s"
        except psycopg.Error:  # IdleInTransactionSessionTimeout, then the session is gone
            return f"ended by the server (idle_in_transaction_session_timeout={bound:g} s)"


def lag_run(
    other_url: str,
    hold: float | None,
    bound: float,
    append: Callable[[str], int],
    read: Callable[[str, int], tuple[list[int], int]],
) -> LagRun:
    run = es.run_prefix()
    result = LagRun()
    stop, written = threading.Event(), threading.Event()  # stop writing; the writer is done
    duration = (hold or 0) + 1.5

    def writer() -> None:
        try:
            while not stop.is_set():
                position = append(run)
                result.committed[position] = time.perf_counter()
                time.sleep(WRITE_EVERY)
        finally:
            written.set()

    def horizon() -> None:
        """The longest write transaction open elsewhere (others' work on a shared server)."""
        with psycopg.connect(other_url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(OTHERS_OLDEST_WRITE, (HOLDER_NAME,)).fetchone()
                result.others = max(result.others, float(row[0]) if row else 0.0)
                time.sleep(0.05)

    def reader() -> None:
        after, deadline = 0, None
        while True:
            positions, after = read(run, after)
            for position in positions:
                result.seen.setdefault(position, time.perf_counter())
                result.order.append(position)
            if written.is_set():  # drain: every committed event, or 10 s
                deadline = deadline or time.perf_counter() + 10
                if set(result.committed) <= set(result.seen) or time.perf_counter() > deadline:
                    return
            time.sleep(POLL_EVERY)

    errors: list[BaseException] = []

    def guarded(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        return run

    threads = [threading.Thread(target=guarded(w)) for w in (writer, reader, horizon)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        if hold is not None:
            result.holder = hold_idle(other_url, hold, bound)
            time.sleep(max(0.0, duration - 0.5 - hold))
        else:
            time.sleep(duration - 0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return result


def lag_rows(stores: Stores, hold: float, bound: float, admin: str) -> list[str]:
    raw = stores.raw[0]
    raw.execute(LAG_DDL)
    reader_conn = stores.raw[1]

    def raw_append(run: str) -> int:
        row = raw.execute(LAG_APPEND, (run,)).fetchone()
        assert row is not None
        return int(row[0])

    def raw_read(run: str, after: int) -> tuple[list[int], int]:
        found = [r[0] for r in reader_conn.execute(LAG_READ, (run, after)).fetchall()]
        return found, found[-1] if found else after

    Read = Callable[[str, int], tuple[list[int], int]]
    variants: dict[str, tuple[Callable[[str], int], Read]] = {
        "raw txid rule": (raw_append, raw_read)
    }
    if stores.db is not None:
        db = stores.db
        sequences: dict[str, int] = {}

        def ours_append(run: str) -> int:
            sequence = sequences[run] = sequences.get(run, 0) + 1
            recorded = db.event_store.append(
                "LagProbe", run, es.new_events(sequence, 1), expected_sequence=sequence - 1
            )
            return int(recorded[-1].position)

        def ours_read(run: str, after: int) -> tuple[list[int], int]:
            # of the probe's type only, as the raw reader reads its own table: the store also
            # holds the read group's 100k events, which a reader from 0 would page through first
            batch = db.event_store.read_all(after_position=after, aggregate_type="LagProbe")
            found = [e.position for e in batch if e.aggregate_id == run]
            return found, batch[-1].position if batch else after

        variants["persistence read_all"] = (ours_append, ours_read)
    rows = [
        "| reader | the other database | lag p50 | lag p99 | lag max | events | skipped | "
        "the idle transaction | others' longest write transaction |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    other = create_database(admin, "persistence_events_other")
    try:
        other_url = with_database(admin, other)
        scenarios: list[tuple[str, float | None, float]] = [
            ("nothing open", None, 0.0),
            (f"idle in transaction {hold:g} s, no bound", hold, 0.0),
            (f"idle in transaction {hold:g} s, bound {bound:g} s", hold, bound),
        ]
        for name, (append, read) in variants.items():
            for scenario, held, limit in scenarios:
                run = lag_run(other_url, held, limit, append, read)
                lags = [run.seen[p] - t for p, t in run.committed.items() if p in run.seen]
                skipped = len(set(run.committed) - set(run.seen))
                in_order = run.order == sorted(run.order) and len(run.order) == len(run.seen)
                rows.append(
                    f"| {name} | {scenario} | {quantile(lags, 0.5) * 1000:.0f} ms | "
                    f"{quantile(lags, 0.99) * 1000:.0f} ms | {quantile(lags, 1.0) * 1000:.0f} ms | "
                    f"{len(run.committed)} | {skipped}{'' if in_order else ' (OUT OF ORDER)'} | "
                    f"{run.holder or '-'} | {run.others:.2f} s |"
                )
    finally:
        drop_database(admin, other)
    return rows


# --- main ---------------------------------------------------------------------------------------

GROUPS = ("appends", "batch", "read", "load", "wakeup", "lag")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="paired rounds per group")
    parser.add_argument("--only", choices=GROUPS, action="append", help="run these groups only")
    parser.add_argument("--population", type=int, default=es.POPULATION, help="events read")
    parser.add_argument("--per-thread", type=int, default=25, help="appends per thread a round")
    parser.add_argument("--batches", type=int, default=10, help="appends of 100 per round")
    parser.add_argument("--loads", type=int, default=5, help="loads of 1,000 per round")
    parser.add_argument("--samples", type=int, default=300, help="wake-ups measured")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds idle in transaction")
    parser.add_argument("--bound", type=float, default=0.5, help="idle_in_transaction_timeout")
    args = parser.parse_args()
    only = set(args.only or GROUPS)
    admin = admin_url()
    with migrated_database(admin, "persistence_events") as url, open_stores(url) as stores:
        rows = list(HEADER)
        if only & {"read", "load"}:
            populate(stores, args.population)
        if "appends" in only:
            group = appends_group(stores, args.per_thread)
            rows += rows_for("appends", group, args.rounds)
        if "batch" in only:
            rows += rows_for("batch", batch_group(stores, args.batches), args.rounds)
        if "read" in only:
            rows += rows_for("read", read_group(stores), max(3, args.rounds // 3))
        if "load" in only:
            rows += rows_for("load", load_group(stores, args.loads), args.rounds)
        if len(rows) > len(HEADER):
            print("\n".join(rows))
        if "wakeup" in only:
            print("\n" + "\n".join(wake_rows(stores, args.samples)))
        if "lag" in only:
            print("\n" + "\n".join(lag_rows(stores, args.hold, args.bound, admin)))


if __name__ == "__main__":
    main()
