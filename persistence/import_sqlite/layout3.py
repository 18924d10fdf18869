"""The third layout: the bot's event store (``events``, ``snapshots``) onto ours (migration 0007).

- detect: an ``events`` table with aggregate_type, aggregate_id and sequence, and ``snapshots``.
- read: every snapshot and event, in rowid order, each JSON text checked (``layout3_json``:
  what jsonb cannot hold is invalid, a number jsonb spells differently is noted); each sequence
  gap not explained by a snapshot (compaction) is invalid (``layout3_events``). With
  ``--skip-invalid`` the aggregates of invalid rows are left out whole. While every row is
  valid, the events are COPYed as they are checked (``layout3_events.check_events``), undone
  at the first invalid one.
- check: every rowid must lie below this transaction's ``pg_current_xact_id() << 20`` (new
  appends continue above), and no stored event may hold a position the import needs (checked
  before the events are written while checked).
- write: COPY the events unless written while checked (position = the SQLite rowid,
  recorded_at = the import's time: the bot's events carry no time) and the snapshots (taken_at
  from their ``timestamp``).
- verify: the file re-read, every event and snapshot compared with what PostgreSQL stores, JSON
  by value and number spelling (``layout3_json.canonical``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg

from persistence.import_sqlite._layout import Layout, Run
from persistence.import_sqlite._report import ImportFailed, Progress
from persistence.import_sqlite._source import open_read_only
from persistence.import_sqlite._target import copy_rows
from persistence.import_sqlite.convert import to_datetime
from persistence.import_sqlite.layout3_events import (
    EVENT_COLUMNS,
    SNAPSHOT_COLUMNS,
    EventStore,
    check_events,
    check_gaps,
    check_snapshots,
    copy_events,
)
from persistence.import_sqlite.layout3_json import same_json
from persistence.import_sqlite.layout3_tables import (
    check_tables,
    read_other,
    write_tables,
)
from persistence.import_sqlite.layout3_verify import verify_tables

__all__ = ["EVENT_COLUMNS", "LAYOUT", "SNAPSHOT_COLUMNS"]

_SNAPSHOTS = (
    f"SELECT rowid, {', '.join(SNAPSHOT_COLUMNS)} FROM snapshots "
    "ORDER BY aggregate_type, aggregate_id"
)
_COPY_SNAPSHOTS = (
    "COPY snapshots (aggregate_type, aggregate_id, last_sequence, snapshot_version, payload, "
    "taken_at) FROM STDIN"
)


def detect(path: Path, source: sqlite3.Connection, tables: set[str]) -> bool:
    if "events" not in tables:
        return False
    columns = {row[1] for row in source.execute("PRAGMA table_info(events)")}
    if not {"aggregate_type", "aggregate_id", "sequence"} <= columns:
        return False
    missing = [c for c in EVENT_COLUMNS if c not in columns]
    if "snapshots" not in tables:
        missing.append("the snapshots table")
    else:
        held = {row[1] for row in source.execute("PRAGMA table_info(snapshots)")}
        missing += [f"snapshots.{c}" for c in SNAPSHOT_COLUMNS if c not in held]
    if missing:
        raise ImportFailed(
            f"{path} looks like the bot's event store but lacks {', '.join(missing)}"
        )
    return True


def read(run: Run) -> EventStore:
    """Check every event and snapshot; while every row is valid, events are written as they are
    checked (``layout3_events``), else nothing is written yet."""
    data = EventStore()
    source = run.source
    data.max_rowid = source.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0]
    check_snapshots(run, data)
    check_gaps(run, data)
    check_events(run, data, optimistic=_refusal(run, data) is None)
    tables = {
        str(row[0]) for row in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    data.sqlx_history = _NOT_OURS in tables
    others = sorted(t for t in tables - _CARRIED - {_NOT_OURS} if not t.startswith("sqlite_"))
    data.other = read_other(run, others, data.left_out)
    return data


# sqlx's own history is the bot's, never ours
_CARRIED = {"events", "snapshots"}
_NOT_OURS = "_sqlx_migrations"


def check(run: Run, data: EventStore) -> None:
    """Refuse rowids the event store's positions could reach, positions taken (unless the events
    were written while checked, the same checked first), and names of the other tables
    (``layout3_tables``) PostgreSQL already holds."""
    check_tables(run, data.other)
    refusal = None if data.events_written else _refusal(run, data)
    if refusal is not None:
        raise ImportFailed(refusal)


def _refusal(run: Run, data: EventStore) -> str | None:
    """Why the events cannot keep their rowids as positions here, if they cannot."""
    limit = run.target.execute("SELECT pg_current_xact_id()::text::bigint << 20").fetchone()
    assert limit is not None
    if data.max_rowid >= limit[0]:
        return (
            f"the file's highest event rowid {data.max_rowid} is not below {limit[0]}, this "
            "transaction's first event-store position (its transaction id << 20): imported "
            "events keep their rowid as position, below every new append; nothing was imported"
        )
    taken = run.target.execute(
        "SELECT min(position), count(*) FROM events WHERE position <= %s", (data.max_rowid,)
    ).fetchone()
    assert taken is not None
    if taken[1]:
        return (
            f"the event store already holds {taken[1]} event(s) at positions up to the file's "
            f"highest rowid {data.max_rowid} (the first at {taken[0]}): the import keeps each "
            "event's rowid as its position; import into an event store without them. Nothing "
            "was imported"
        )
    return None


def _kept(data: EventStore, rows: Any) -> Iterator[sqlite3.Row]:
    left_out = data.left_out
    for row in rows:
        if (row["aggregate_type"], row["aggregate_id"]) not in left_out:
            yield row


def write(run: Run, data: EventStore) -> None:
    """COPY the events (unless written while checked) and snapshots of every aggregate not left
    out, and every other table."""
    if not data.events_written:
        copy_events(run, data)

    def snapshots() -> Iterator[tuple[Any, ...]]:
        for row in _kept(data, run.source.execute(_SNAPSHOTS)):
            data.inserted["snapshots"] += 1
            taken_at, _ = to_datetime("timestamp", row["timestamp"])
            version = row["snapshot_version"]
            yield (
                row["aggregate_type"],
                row["aggregate_id"],
                row["last_sequence"],
                0 if version is None else version,
                row["payload"],
                taken_at,
            )

    copy_rows(run.target, _COPY_SNAPSHOTS, snapshots())
    write_tables(run, data.other)


_STORED_EVENTS = (
    "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, "
    "payload::text, metadata::text FROM events WHERE position <= %s ORDER BY position"
)
_STORED_SNAPSHOTS = (
    "SELECT s.aggregate_type, s.aggregate_id, last_sequence, payload::text, taken_at, "
    "snapshot_version FROM snapshots s JOIN unnest(%s::text[], %s::text[]) AS x(t, i) "
    "ON (s.aggregate_type, s.aggregate_id) = (x.t, x.i) "
    'ORDER BY s.aggregate_type COLLATE "C", s.aggregate_id COLLATE "C"'
)


# rows per chunk the server streams (libpq 17 and later; row by row before)
_CHUNK = 10_000 if psycopg.pq.version() >= 170_000 else 1


def _mismatch(what: str, key: Any, column: str) -> ImportFailed:
    return ImportFailed(
        f"verification failed: {what} {key} {column} differs between the file and PostgreSQL; "
        "nothing was imported"
    )


def verify(run: Run, data: EventStore) -> dict[str, str]:
    """Compare every stored event and snapshot with the file, read again without ``read``."""
    compared = 0
    bar = Progress(data.inserted["events"], run.progress, "events: verified")
    left_out = data.left_out
    with closing(open_read_only(run.path)) as source, run.target.cursor() as cursor:
        raw = source.execute(
            "SELECT rowid, aggregate_type, aggregate_id, sequence, event_type, event_version, "
            "payload, metadata FROM events ORDER BY rowid"
        )
        # streamed: the server renders the next rows while these are compared
        for stored in cursor.stream(_STORED_EVENTS, (data.max_rowid,), size=_CHUNK):
            row = next(raw, None)
            while row is not None and left_out and (row[1], row[2]) in left_out:
                row = next(raw, None)
            if row is None:
                raise ImportFailed(
                    f"verification failed: stored event {stored[0]} has no row in the file; "
                    "nothing was imported"
                )
            if stored[:6] != row[:6]:
                raise _mismatch("event rowid", row[0], "identity")
            if not same_json(stored[6], row[6]):
                raise _mismatch("event rowid", row[0], "payload")
            if stored[7] != row[7] and not same_json(stored[7], row[7]):
                raise _mismatch("event rowid", row[0], "metadata")
            compared += 1
            if not compared % 10_000:
                bar.update(compared)
        bar.update(compared, final=True)
        if next((r for r in raw if (r[1], r[2]) not in left_out), None) is not None:
            raise ImportFailed("verification failed: the file has events PostgreSQL lacks")
    if compared != data.inserted["events"]:
        raise ImportFailed(
            f"verification failed: {compared} stored events for {data.inserted['events']} "
            "inserted; nothing was imported"
        )
    snapshots = _verify_snapshots(run, data)
    others = verify_tables(run, data.other)
    return (
        {
            "events": f"{compared} events compared with the file, re-read: position = rowid, every "
            "column, JSON by value and number spelling",
            "snapshots": f"{snapshots} snapshots compared with the file, re-read",
        }
        | others
        | (
            {_NOT_OURS: "not carried: the bot's own migration history (sqlx), not its data"}
            if data.sqlx_history
            else {}
        )
    )


def _verify_snapshots(run: Run, data: EventStore) -> int:
    with closing(open_read_only(run.path)) as source:
        file_rows = [
            r
            for r in source.execute(
                "SELECT aggregate_type, aggregate_id, last_sequence, payload, timestamp, "
                "snapshot_version FROM snapshots ORDER BY aggregate_type, aggregate_id"
            )
            if (r[0], r[1]) not in data.left_out
        ]
    types = [r[0] for r in file_rows]
    ids = [r[1] for r in file_rows]
    stored = run.target.execute(_STORED_SNAPSHOTS, (types, ids)).fetchall()
    if len(stored) != len(file_rows) or len(stored) != data.inserted["snapshots"]:
        raise ImportFailed(
            f"verification failed: {len(stored)} stored snapshots for {len(file_rows)} in the "
            "file; nothing was imported"
        )
    for want, got in zip(file_rows, stored, strict=True):
        key = f"{want[0]} {want[1]}"
        if tuple(got[:3]) != tuple(want[:3]) or got[5] != (want[5] or 0):
            raise _mismatch("snapshot", key, "identity")
        if not same_json(got[3], want[3]):
            raise _mismatch("snapshot", key, "payload")
        if got[4] != to_datetime("timestamp", want[4])[0]:
            raise _mismatch("snapshot", key, "taken_at")
    return len(stored)


def counts(data: EventStore) -> dict[str, Any]:
    return {
        "trades_read": 0,
        "trades_valid": 0,
        "trades_inserted": 0,
        "trades_already_present": 0,
        "tables": {t: (data.read[t], data.invalid[t], data.inserted[t]) for t in data.read}
        | {
            t: (data.other.read[t], data.other.invalid[t], data.other.inserted.get(t, 0))
            for t in data.other.read
        },
    }


LAYOUT = Layout("event store", detect, read, check, write, verify, counts)
