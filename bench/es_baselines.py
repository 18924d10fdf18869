"""The event store's baselines (issue #27), shared by ``bench/test_event_store.py`` and
``python -m bench.events``: what a user would pick instead, and the raw psycopg denominators.

- ``eventsourcing``'s PostgreSQL recorder (``PostgresDatastore`` + ``PostgresApplicationRecorder``,
  text originator ids, its own table ``es_stored_events``): a table lock per append keeps its
  notification log gap-free;
- SQLite with the bot's sqlite-es scheme (``shared/BOT-MODEL.md``, layout 3): ``events`` keyed by
  (aggregate_type, aggregate_id, sequence), the rowid as the global order; WAL,
  ``synchronous=FULL``, a 10 s busy timeout, one connection per thread, autocommit with explicit
  ``BEGIN``/``COMMIT`` as sqlx runs it;
- raw psycopg: a multi-row ``INSERT`` into a table of the event store's columns (position an
  identity: the floor, *not* gap-free), a keyset fetch by position, a load by aggregate.

Every workload here writes fresh aggregate ids (a random run prefix), so rounds never clash.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

import persistence
from persistence.import_sqlite.layout3 import EVENT_COLUMNS  # the bot's event columns
from persistence.import_sqlite.sample3 import SCHEMA as SAMPLE_SCHEMA

AGGREGATE_TYPE = "Position"
EVENT_TYPE = "PositionFillApplied"
THREADS = 8
BATCH = 100
LOAD_SIZE = 1_000
POPULATION = 100_000
PAGE = 1_000  # read_all's default limit; the raw fetch pages by the same size
SQLITE_BUSY_TIMEOUT_MS = 10_000


def run_prefix() -> str:
    return uuid.uuid4().hex[:8]


def payload(index: int) -> dict[str, Any]:
    """A fill applied to a position, the size of the bot's (about 200 bytes of JSON)."""
    return {
        "tx_hash": f"0x{index:064x}",
        "log_index": index % 512,
        "symbol": "AAPL",
        "amount": "1.250000000000000000",
        "direction": "BUY",
        "price_usdc": "190.120000",
        "block_number": 23_000_000 + index,
    }


METADATA = {"correlation_id": "c0ffee00-0000-4000-8000-000000000000", "source": "bench"}
METADATA_JSON = json.dumps(METADATA)


# --- raw psycopg ------------------------------------------------------------------------------

RAW_TABLE = "bench_raw_events"
READ_COLUMNS = (*EVENT_COLUMNS, "position", "recorded_at")
# The event store's ``events`` (migration 0007: the same columns, keys and indexes) but for
# its CHECK constraints, with an identity position: what a hand-written store would insert.
RAW_DDL = f"""
CREATE TABLE IF NOT EXISTS {RAW_TABLE} (
    position bigint GENERATED ALWAYS AS IDENTITY,
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    sequence bigint NOT NULL,
    event_type text NOT NULL,
    event_version text NOT NULL,
    payload jsonb NOT NULL,
    metadata jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    UNIQUE (position)
);
CREATE INDEX IF NOT EXISTS {RAW_TABLE}_type_position_idx ON {RAW_TABLE} (aggregate_type, position);
"""
_ROW = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"


def raw_insert_sql(rows: int, table: str = RAW_TABLE) -> str:
    """One multi-row ``INSERT ... VALUES`` of ``rows`` events, returning their positions (as an
    append returns its recorded events)."""
    values = ", ".join([_ROW] * rows)
    return f"INSERT INTO {table} ({', '.join(EVENT_COLUMNS)}) VALUES {values} RETURNING position"


def raw_params(aggregate_id: str, first: int, count: int) -> list[Any]:
    """The flat parameters of ``count`` events of one aggregate, sequences from ``first``."""
    params: list[Any] = []
    for sequence in range(first, first + count):
        params += [
            AGGREGATE_TYPE,
            aggregate_id,
            sequence,
            EVENT_TYPE,
            "1",
            psycopg.types.json.Jsonb(payload(sequence)),
            psycopg.types.json.Jsonb(METADATA),
        ]
    return params


def raw_setup(conn: psycopg.Connection[Any]) -> None:
    conn.execute(RAW_DDL)


def raw_append(conn: psycopg.Connection[Any], aggregate_id: str, first: int, count: int) -> int:
    rows = conn.execute(raw_insert_sql(count), raw_params(aggregate_id, first, count)).fetchall()
    return len(rows)


def raw_read_sql(table: str) -> str:
    return (
        f"SELECT {', '.join(READ_COLUMNS)} FROM {table} WHERE position > %s "
        f"ORDER BY position LIMIT %s"
    )


def raw_load_sql(table: str) -> str:
    return (
        f"SELECT {', '.join(READ_COLUMNS)} FROM {table} "
        f"WHERE aggregate_type = %s AND aggregate_id = %s AND sequence > %s ORDER BY sequence"
    )


def raw_catch_up(conn: psycopg.Connection[Any], table: str, total: int, page: int = PAGE) -> int:
    """Read ``total`` events from position 0, a keyset page at a time, as a reader catches up."""
    sql, after, seen = raw_read_sql(table), 0, 0
    while seen < total:
        rows = conn.execute(sql, (after, min(page, total - seen))).fetchall()
        if not rows:
            break
        seen += len(rows)
        after = rows[-1][7]
    return seen


def raw_load(conn: psycopg.Connection[Any], table: str, aggregate_id: str) -> int:
    return len(conn.execute(raw_load_sql(table), (AGGREGATE_TYPE, aggregate_id, 0)).fetchall())


# --- eventsourcing's PostgreSQL recorder -------------------------------------------------------

ES_TABLE = "es_stored_events"
ES_TOPIC = "bench.positions:Position.FillApplied"


class EventsourcingStore:
    """``eventsourcing``'s application recorder on its own table, a pool of ``pool_size``."""

    def __init__(self, url: str, pool_size: int = THREADS) -> None:
        from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

        params = conninfo_to_dict(url)
        self.datastore = PostgresDatastore(
            dbname=str(params.get("dbname") or "postgres"),
            host=str(params.get("host") or "127.0.0.1"),
            port=str(params.get("port") or 5432),
            user=str(params.get("user") or "postgres"),
            password=str(params.get("password") or ""),
            pool_size=pool_size,
            originator_id_type="text",
        )
        self.recorder = PostgresApplicationRecorder(self.datastore, events_table_name=ES_TABLE)
        self.recorder.create_table()

    def append(self, aggregate_id: str, first: int, count: int) -> int:
        from eventsourcing.persistence import StoredEvent

        events = [
            StoredEvent(
                originator_id=aggregate_id,
                originator_version=version,
                topic=ES_TOPIC,
                state=json.dumps(payload(version)).encode(),
            )
            for version in range(first, first + count)
        ]
        ids = self.recorder.insert_events(events)
        return len(ids or ())

    def catch_up(self, total: int, page: int = PAGE) -> int:
        """Its notification log from the start, ``page`` at a time, states decoded."""
        after, seen = 0, 0
        while seen < total:
            batch = self.recorder.select_notifications(
                after, min(page, total - seen), inclusive_of_start=False
            )
            if not batch:
                break
            [json.loads(n.state) for n in batch]
            seen += len(batch)
            after = batch[-1].id
        return seen

    def load(self, aggregate_id: str) -> int:
        return len([json.loads(e.state) for e in self.recorder.select_events(aggregate_id)])

    def close(self) -> None:
        self.datastore.close()


# --- SQLite, the bot's sqlite-es scheme ------------------------------------------------------

# the bot's layout-3 file, as the import's sample writes it: one definition of its schema
SQLITE_SCHEMA = SAMPLE_SCHEMA
_SQLITE_ROW = "(" + ", ".join(["?"] * len(EVENT_COLUMNS)) + ")"
SQLITE_READ = (
    f"SELECT rowid, {', '.join(EVENT_COLUMNS)} FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?"
)
SQLITE_LOAD = (
    f"SELECT rowid, {', '.join(EVENT_COLUMNS)} FROM events "
    "WHERE aggregate_type = ? AND aggregate_id = ? AND sequence > ? ORDER BY sequence"
)


def sqlite_es_connect(path: Path) -> sqlite3.Connection:
    """A connection as the bot opens its store: WAL, synchronous=FULL, 10 s busy timeout; in
    autocommit, so each append below is one explicit transaction."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SQLITE_SCHEMA)
    return conn


def sqlite_insert_sql(rows: int) -> str:
    values = ", ".join([_SQLITE_ROW] * rows)
    return f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES {values}"


def sqlite_append(conn: sqlite3.Connection, aggregate_id: str, first: int, count: int) -> int:
    """An append as sqlite-es makes it: one multi-row INSERT in a transaction. A busy database
    raises (never read as "already stored", the bot's issue 846)."""
    params: list[Any] = []
    for sequence in range(first, first + count):
        params += [
            AGGREGATE_TYPE,
            aggregate_id,
            sequence,
            EVENT_TYPE,
            "1",
            json.dumps(payload(sequence)),
            METADATA_JSON,
        ]
    conn.execute("BEGIN")
    try:
        conn.execute(sqlite_insert_sql(count), params)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return count


def sqlite_catch_up(conn: sqlite3.Connection, total: int, page: int = PAGE) -> int:
    """The read models' path: by rowid from 0, ``page`` at a time, JSON decoded."""
    after, seen = 0, 0
    while seen < total:
        rows = conn.execute(SQLITE_READ, (after, min(page, total - seen))).fetchall()
        if not rows:
            break
        [(json.loads(row[6]), json.loads(row[7])) for row in rows]
        seen += len(rows)
        after = rows[-1][0]
    return seen


def sqlite_load(conn: sqlite3.Connection, aggregate_id: str) -> int:
    rows = conn.execute(SQLITE_LOAD, (AGGREGATE_TYPE, aggregate_id, 0)).fetchall()
    return len([(json.loads(row[6]), json.loads(row[7])) for row in rows])


# --- the event store ("ours") ----------------------------------------------------------------


def new_events(first: int, count: int) -> list[Any]:
    return [
        persistence.NewEvent(EVENT_TYPE, payload(sequence), metadata=METADATA)
        for sequence in range(first, first + count)
    ]


def ours_append(db: Any, aggregate_id: str, first: int, count: int) -> int:
    recorded = db.event_store.append(
        AGGREGATE_TYPE, aggregate_id, new_events(first, count), expected_sequence=first - 1
    )
    return len(recorded)


def ours_catch_up(db: Any, total: int, page: int = PAGE) -> int:
    after, seen = 0, 0
    while seen < total:
        batch = db.event_store.read_all(after_position=after, limit=min(page, total - seen))
        if not batch:
            break
        seen += len(batch)
        after = batch[-1].position
    return seen


def ours_load(db: Any, aggregate_id: str) -> int:
    return len(db.event_store.load(AGGREGATE_TYPE, aggregate_id))


# --- workloads --------------------------------------------------------------------------------

Appender = Callable[[int, str, int], Any]  # (thread index, aggregate id, sequence) -> one append


def threaded_appends(append: Appender, prefix: str, per_thread: int) -> float:
    """``THREADS`` threads, each appending ``per_thread`` single events to an aggregate of its
    own (fresh ids under ``prefix``); returns the seconds from the start line to the last
    append. Any thread's error is raised here."""
    start_line = threading.Barrier(THREADS + 1)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        aggregate_id = f"{prefix}-t{index}"
        start_line.wait()
        try:
            for sequence in range(1, per_thread + 1):
                append(index, aggregate_id, sequence)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    start_line.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def populate(append_many: Callable[[str, int, int], Any], ids: Iterable[str]) -> None:
    """``LOAD_SIZE`` events for each aggregate id, in one append each."""
    for aggregate_id in ids:
        append_many(aggregate_id, 1, LOAD_SIZE)


def population_ids(prefix: str, total: int) -> Sequence[str]:
    """Aggregates of ``LOAD_SIZE`` events making up ``total`` (the first is the one loaded)."""
    return [f"{prefix}-pop{k}" for k in range(max(1, total // LOAD_SIZE))]
