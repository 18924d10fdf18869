"""The third layout's events and snapshots: checked, and written while checked when clean.

``layout3.read`` calls, in order, :func:`check_snapshots`, :func:`check_gaps` and
:func:`check_events`. The last reads every event once, in rowid order: one SQLite expression
per row names a text or sequence PostgreSQL's constraints refuse, and ``layout3_json`` checks
the payload and metadata. While every row so far is valid (and nothing stored is in the way:
``optimistic``), each checked row goes straight into a COPY, inside a savepoint, so that the
server inserts one batch on its core while the next is checked on this one. The first invalid
row ends the COPY and rolls back to the savepoint: nothing of it stays, the check goes on to
name every invalid row, and the driver refuses the import, or (``--skip-invalid``) ``layout3``
writes the events again with :func:`copy_events`, without the aggregates left out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import attrs
import psycopg
from psycopg import sql

from persistence.import_sqlite._layout import Run
from persistence.import_sqlite._report import Progress
from persistence.import_sqlite._target import copy_rows
from persistence.import_sqlite.convert import Invalid, to_datetime
from persistence.import_sqlite.layout3_json import as_written, check_json
from persistence.import_sqlite.layout3_tables import Tables

__all__ = [
    "EVENT_COLUMNS",
    "SNAPSHOT_COLUMNS",
    "EventStore",
    "check_events",
    "check_gaps",
    "check_snapshots",
    "copy_events",
]

EVENT_COLUMNS = (
    "aggregate_type",
    "aggregate_id",
    "sequence",
    "event_type",
    "event_version",
    "payload",
    "metadata",
)
SNAPSHOT_COLUMNS = (
    "aggregate_type",
    "aggregate_id",
    "last_sequence",
    "payload",
    "timestamp",
    "snapshot_version",
)
_TEXT_LIMITS = {"aggregate_type": 100, "aggregate_id": 256, "event_type": 200, "event_version": 32}
_REASONS = {
    **{
        column: f"must be text of 1 to {limit} characters" for column, limit in _TEXT_LIMITS.items()
    },
    "sequence": "must be an integer from 1",
}
_NUL = "has a NUL character, which PostgreSQL's text cannot hold"


def _flaw(columns: dict[str, int]) -> str:
    """One SQL expression: the first text column (with its limit) or sequence PostgreSQL's
    constraints refuse, as the column's name (prefixed by ``nul:`` for a NUL), else NULL."""
    cases = []
    for column, limit in columns.items():
        cases.append(
            f"WHEN typeof({column}) = 'text' AND instr({column}, char(0)) THEN 'nul:{column}'"
        )
        cases.append(
            f"WHEN typeof({column}) <> 'text' OR length({column}) NOT BETWEEN 1 AND {limit} "
            f"THEN '{column}'"
        )
    cases.append("WHEN typeof(sequence) <> 'integer' OR sequence < 1 THEN 'sequence'")
    return f"CASE {' '.join(cases)} END"


# the row as COPY takes it (position = rowid), then what is wrong with it, if anything
_EVENTS = (
    f"SELECT rowid, {', '.join(EVENT_COLUMNS)}, {_flaw(_TEXT_LIMITS)} FROM events ORDER BY rowid"
)
_WIDTH = 1 + len(EVENT_COLUMNS)
_COPY_EVENTS = f"COPY events (position, {', '.join(EVENT_COLUMNS)}) FROM STDIN"
_SAVEPOINT = "persistence_import_events"


@attrs.define
class EventStore:
    """What the steps learn: counts, the highest rowid, and the aggregates left out."""

    read: dict[str, int] = attrs.field(factory=lambda: {"events": 0, "snapshots": 0})
    invalid: dict[str, int] = attrs.field(factory=lambda: {"events": 0, "snapshots": 0})
    inserted: dict[str, int] = attrs.field(factory=lambda: {"events": 0, "snapshots": 0})
    max_rowid: int = 0
    left_out: set[tuple[str, str]] = attrs.field(factory=set)
    sqlx_history: bool = False
    other: Tables = attrs.field(factory=Tables)  # every other table (layout3_tables)
    events_written: bool = False  # COPYed while checked (check_events): write has none left


def _bad(
    run: Run, data: EventStore, table: str, row: Any, sequence: Any, column: str, why: str
) -> None:
    """An invalid row (``row``: rowid, aggregate_type, aggregate_id first): named with its
    rowid, aggregate and sequence; its aggregate left out."""
    aggregate = (str(row[1]), str(row[2]))
    run.problems.invalid(
        table, row[0], column, f"{aggregate[0]} {aggregate[1]} sequence {sequence}", why
    )
    data.invalid[table] += 1
    data.left_out.add(aggregate)


def _json_problem(
    run: Run, data: EventStore, table: str, row: Any, sequence: Any, column: str, text: Any
) -> bool:
    """Name ``text`` if jsonb cannot hold it (True); note each number jsonb spells otherwise."""
    why, respelled = check_json(text)
    if why is not None:
        _bad(run, data, table, row, sequence, column, why)
        return True
    for written, stored in respelled:
        why = f"jsonb stores this number as {stored} (the same value)"
        run.problems.note(table, row[0], column, written, why)
    return False


def _event_problems(run: Run, data: EventStore, row: Any) -> bool:
    """Name what is wrong with the event ``row`` (True when it is invalid), note what jsonb
    respells: the slow path, for the rare row the fast one did not pass."""
    flaw = row[_WIDTH]
    if flaw is not None:
        column = flaw.removeprefix("nul:")
        _bad(run, data, "events", row, row[3], column, _NUL if flaw != column else _REASONS[column])
        return True
    return _json_problem(run, data, "events", row, row[3], "payload", row[6]) or _json_problem(
        run, data, "events", row, row[3], "metadata", row[7]
    )


def check_events(run: Run, data: EventStore, *, optimistic: bool) -> None:
    """Check every event in rowid order; COPY each valid one as it is checked while
    ``optimistic`` and no row has been invalid (the module's docstring)."""
    source = run.source
    total = source.execute("SELECT count(*) FROM events").fetchone()[0]
    optimistic = optimistic and not data.left_out
    phase = "events: checked, written" if optimistic else "events: checked"
    bar = Progress(total, run.progress, phase)
    rows = source.cursor()
    rows.row_factory = None  # tuples: COPY takes them as they are
    rows.execute(_EVENTS)
    done = inserted = 0
    rebuild: list[sql.Composed] = []
    with ExitStack() as stack:
        copy = None
        if optimistic:
            run.target.execute(f"SAVEPOINT {_SAVEPOINT}")
            rebuild = drop_indexes(run.target)
            cursor = stack.enter_context(run.target.cursor())
            copy = stack.enter_context(cursor.copy(_COPY_EVENTS))
        while batch := rows.fetchmany(run.batch_size):
            for row in batch:
                # the fast path: no flaw, and JSON texts jsonb holds as they are written
                if (
                    row[_WIDTH] is None
                    and as_written(row[6])
                    and (row[7] == "{}" or as_written(row[7]))
                ):
                    if copy is not None:
                        copy.write_row(row[:_WIDTH])
                        inserted += 1
                    continue
                if _event_problems(run, data, row):
                    copy = None  # nothing more is written here: rolled back below
                elif copy is not None:
                    copy.write_row(row[:_WIDTH])
                    inserted += 1
            done += len(batch)
            data.max_rowid = batch[-1][0]
            bar.update(done)
    bar.update(done, final=True)
    data.read["events"] = done
    if optimistic:
        if data.invalid["events"]:
            run.target.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")  # the indexes too
        else:
            rebuild_indexes(run.target, rebuild)
            data.events_written, data.inserted["events"] = True, inserted
        run.target.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")


_SNAPSHOTS = (
    f"SELECT rowid, {', '.join(SNAPSHOT_COLUMNS)} FROM snapshots "
    "ORDER BY aggregate_type, aggregate_id"
)


def _snapshot_problem(run: Run, data: EventStore, row: sqlite3.Row) -> None:
    sequence = row["last_sequence"]
    for column in ("aggregate_type", "aggregate_id"):
        value, limit = row[column], _TEXT_LIMITS[column]
        if isinstance(value, str) and "\x00" in value:
            return _bad(run, data, "snapshots", row, sequence, column, _NUL)
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            return _bad(run, data, "snapshots", row, sequence, column, _REASONS[column])
    if not isinstance(sequence, int) or sequence < 1:
        return _bad(run, data, "snapshots", row, sequence, "sequence", _REASONS["sequence"])
    _json_problem(run, data, "snapshots", row, sequence, "payload", row["payload"])
    return None


def _snapshot_version_and_time(run: Run, data: EventStore, row: sqlite3.Row) -> None:
    sequence, version = row["last_sequence"], row["snapshot_version"]
    if version is not None and not (isinstance(version, int) and version >= 0):
        why = "must be an integer from 0"
        _bad(run, data, "snapshots", row, sequence, "snapshot_version", why)
    try:
        if row["timestamp"] is None:
            raise Invalid("timestamp", None, "is NULL, and taken_at requires a time")
        to_datetime("timestamp", row["timestamp"])
    except Invalid as error:
        _bad(run, data, "snapshots", row, sequence, "timestamp", error.reason)


def check_snapshots(run: Run, data: EventStore) -> None:
    """Check every snapshot (a few per aggregate at most: row by row)."""
    for row in run.source.execute(_SNAPSHOTS):
        data.read["snapshots"] += 1
        _snapshot_problem(run, data, row)
        _snapshot_version_and_time(run, data, row)


_GAPS = """
SELECT rowid, aggregate_type, aggregate_id, sequence, previous FROM (
    SELECT rowid, aggregate_type, aggregate_id, sequence,
           lag(sequence) OVER (PARTITION BY aggregate_type, aggregate_id ORDER BY sequence)
             AS previous
      FROM events WHERE typeof(sequence) = 'integer')
 WHERE previous IS NOT NULL AND sequence <> previous + 1
"""
# whether any aggregate's sequences are not contiguous (or not integers, or repeated): one scan
# of the primary key's index, where the window above sorts (a fifth of its time)
_ANY_GAP = """
SELECT EXISTS (SELECT 1 FROM events GROUP BY aggregate_type, aggregate_id
                HAVING count(*) <> max(sequence) - min(sequence) + 1
                    OR count(*) <> count(DISTINCT sequence)
                    OR max(typeof(sequence) <> 'integer'))
"""
_STARTS = """
SELECT e.rowid, e.aggregate_type, e.aggregate_id, e.sequence, s.last_sequence FROM (
    SELECT min(rowid) AS rowid, aggregate_type, aggregate_id, min(sequence) AS sequence
      FROM events WHERE typeof(sequence) = 'integer' GROUP BY aggregate_type, aggregate_id) e
  LEFT JOIN snapshots s USING (aggregate_type, aggregate_id)
 WHERE e.sequence > 1 AND (s.last_sequence IS NULL OR e.sequence > s.last_sequence + 1)
"""


def check_gaps(run: Run, data: EventStore) -> None:
    """Name each sequence gap; an aggregate whose events start after its snapshot (compacted)
    has none. A sequence that is not an integer is named by ``check_events``, and ignored here."""
    if not run.source.execute(_ANY_GAP).fetchone()[0]:
        rows = []
    else:
        rows = run.source.execute(_GAPS).fetchall()
    for row in rows:
        why = f"follows sequence {row['previous']}: sequences missing between them"
        _bad(run, data, "events", row, row["sequence"], "sequence", why)
    for row in run.source.execute(_STARTS):
        covered = row["last_sequence"]
        why = (
            f"is the aggregate's first event: sequences 1 to {row['sequence'] - 1} are missing"
            + ("" if covered is None else f" and its snapshot covers only up to {covered}")
        )
        _bad(run, data, "events", row, row["sequence"], "sequence", why)


def copy_events(run: Run, data: EventStore) -> None:
    """COPY the events of every aggregate not left out (when ``check_events`` wrote none)."""
    bar = Progress(data.read["events"], run.progress, "events: written")
    left_out = data.left_out
    inserted = 0

    def events() -> Iterator[tuple[Any, ...]]:
        nonlocal inserted
        rows = run.source.cursor()
        rows.row_factory = None
        rows.execute(_EVENTS)
        while batch := rows.fetchmany(run.batch_size):
            for row in batch:
                if (row[1], row[2]) not in left_out:
                    inserted += 1
                    yield row[:_WIDTH]
            bar.update(inserted)
        bar.update(inserted, final=True)

    rebuild = drop_indexes(run.target)
    copy_rows(run.target, _COPY_EVENTS, events())
    rebuild_indexes(run.target, rebuild)
    data.inserted["events"] = inserted


# each index of events, with the constraint it backs, if any; and whether anything stands in
# the way of dropping them for a while (rows, a foreign key to events, a replica identity index)
_INDEXES = """
SELECT c.conname, pg_get_constraintdef(c.oid), i.indexrelid::regclass::text,
       pg_get_indexdef(i.indexrelid)
  FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
 WHERE i.indrelid = 'events'::regclass
 ORDER BY i.indexrelid
"""
_IN_THE_WAY = """
SELECT EXISTS (SELECT FROM events)
    OR EXISTS (SELECT FROM pg_constraint WHERE confrelid = 'events'::regclass)
    OR (SELECT relreplident <> 'd' FROM pg_class WHERE oid = 'events'::regclass)
"""


def drop_indexes(conn: psycopg.Connection[Any]) -> list[sql.Composed]:
    """Drop the indexes of an empty ``events`` (and the constraints they back) for the COPY,
    returning the statements that build them again, as they were: one sorted build of each
    index costs the server less than a million inserts into three. Nothing is dropped (and
    nothing returned) unless the table is empty and nothing refers to its indexes. The lock
    this takes holds readers of ``events`` until the import ends (the bot is stopped then)."""
    in_the_way = conn.execute(_IN_THE_WAY).fetchone()
    if in_the_way is None or in_the_way[0]:
        return []
    rebuild: list[sql.Composed] = []
    for constraint, definition, index, index_definition in conn.execute(_INDEXES).fetchall():
        if constraint is not None:
            name = sql.Identifier(constraint)
            conn.execute(sql.SQL("ALTER TABLE events DROP CONSTRAINT {}").format(name))
            rebuild.append(
                sql.SQL("ALTER TABLE events ADD CONSTRAINT {} {}").format(name, sql.SQL(definition))
            )
        else:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(index)))
            rebuild.append(sql.Composed([sql.SQL(index_definition)]))
    return rebuild


def rebuild_indexes(conn: psycopg.Connection[Any], rebuild: list[sql.Composed]) -> None:
    """Build again what :func:`drop_indexes` dropped (checking the unique ones)."""
    for statement in rebuild:
        conn.execute(statement)
