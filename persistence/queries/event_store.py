"""The event store's statements (migration 0007), written out: each is prebuilt text with
bound ``%(name)s`` parameters only. ``python -m persistence.queries`` prints them.

Gap-free reading: a reader returns only positions below ``_HORIZON``. A position is
``(transaction id << 20) + index``; every transaction whose id is below the snapshot's xmin has
ended, so nothing can commit later at a position below the horizon (docs/event-store.md).
"""

from __future__ import annotations

__all__ = [
    "ADVANCE_CHECKPOINT",
    "APPEND_AFTER_SNAPSHOT",
    "APPEND_EVENTS",
    "APPEND_NEXT",
    "COMPACTED_BEFORE",
    "COMPACT_EVENTS",
    "CREATE_CHECKPOINT",
    "EVENTS_READABLE_AFTER",
    "LAST_SEQUENCE",
    "LOAD_EVENTS",
    "LOCK_CHECKPOINT",
    "NOTIFY_CHANNEL",
    "READ_ALL",
    "READ_ALL_OF_TYPE",
    "RESET_CHECKPOINT",
    "SAVE_SNAPSHOT",
    "SELECT_CHECKPOINT",
    "SELECT_SNAPSHOT",
    "SET_CHECKPOINT",
]

# The channel the library's notifier sends on after appends commit, and wait_for listens to.
NOTIFY_CHANNEL = "persistence_events"

# The first position no reader may return yet (see the module's docstring).
_HORIZON = "(pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20)"

_EVENT = (
    '"aggregate_type", "aggregate_id", "sequence", "event_type", "event_version", "payload", '
    '"metadata", "position", "recorded_at"'
)
_AGGREGATE = '"aggregate_type" = %(aggregate_type)s AND "aggregate_id" = %(aggregate_id)s'

# One round trip; the function (migration 0007) checks, numbers and positions the events.
APPEND_EVENTS = (
    'SELECT "actual", "position", "sequence", "recorded_at" FROM append_events('
    "%(aggregate_type)s::text, %(aggregate_id)s::text, %(expected_sequence)s::bigint, "
    "%(events)s::jsonb)"
)

# One event appended in a transaction of its own (an autocommit statement): no function call,
# one index probe, and its position is exactly (transaction id << 20), the first of its
# transaction. APPEND_NEXT inserts the next event after the aggregate's last, when that is at
# the expected sequence: no row otherwise (a wrong expectation, or compaction deleted the events
# up to it: APPEND_AFTER_SNAPSHOT then, when the snapshot ends there). A new aggregate's first
# event goes through append_events(): with no row to lock, a check after the insert is what
# stops a racing writer's compacted event from being stored twice (migration 0012).
# Compaction: each statement checks the aggregate's whole state in its one snapshot, and a
# compaction replaces events by their snapshot in one commit, so a stale writer sees one or the
# other. The row read (the last event, the snapshot) is locked to the commit (KEY SHARE: other
# appends take it too): a compaction that began later deletes that event, or updates that
# snapshot, only after the append, so a concurrent writer's next event is still there for the
# unique check. Checking only the event at the expected sequence, without the lock, let a
# stale or racing writer in: its unique check waited for a compaction to delete the next event,
# then found it gone (docs/performance.md, fifth pass).
# A concurrent event at the next sequence is a unique violation on events_pkey: the caller's
# step runs alone, so that failure undoes nothing else, and a second statement (LAST_SEQUENCE,
# with a snapshot of its own that shows the winner) reads the actual sequence.
# Why this shape (bench.server_instructions, docs/performance.md): the probe as the INSERT's own
# scan costs less than a subquery, and the aggregate's columns come from the stored event,
# already of the column types, so their rules are not checked again; ON CONFLICT DO NOTHING
# cost a speculative insertion per append.
_INSERT_ONE = (
    'INSERT INTO "events" AS e ("position", "aggregate_type", "aggregate_id", "sequence", '
    '"event_type", "event_version", "payload", "metadata") '
    "SELECT pg_current_xact_id()::text::bigint << 20, {}, %(event_type)s::text, "
    "%(event_version)s::text, %(payload)s::jsonb, %(metadata)s::jsonb {}"
    'RETURNING e."position", e."recorded_at"'
)
APPEND_NEXT = _INSERT_ONE.format(
    'x."aggregate_type", x."aggregate_id", x."sequence" + 1',
    # the last event from the expected sequence on: the expected one, or none is inserted
    'FROM (SELECT "aggregate_type", "aggregate_id", "sequence" FROM "events" '
    f'WHERE {_AGGREGATE} AND "sequence" >= %(expected_sequence)s::bigint '
    'ORDER BY "sequence" DESC LIMIT 1 FOR KEY SHARE) x '
    'WHERE x."sequence" = %(expected_sequence)s::bigint ',
)
_NO_EVENT_AFTER = (
    f'NOT EXISTS (SELECT FROM "events" WHERE {_AGGREGATE} '
    'AND "sequence" > %(expected_sequence)s::bigint)'
)
APPEND_AFTER_SNAPSHOT = _INSERT_ONE.format(
    's."aggregate_type", s."aggregate_id", s."last_sequence" + 1',
    f'FROM "snapshots" s WHERE {_AGGREGATE} '
    f'AND s."last_sequence" = %(expected_sequence)s::bigint AND {_NO_EVENT_AFTER} FOR SHARE ',
)

LOAD_EVENTS = (
    f'SELECT {_EVENT} FROM "events" WHERE {_AGGREGATE} AND "sequence" > %(after_sequence)s '
    'ORDER BY "sequence"'
)
# after a load that found no event right after after_sequence: did compaction delete it?
COMPACTED_BEFORE = (
    'SELECT s."last_sequence" FROM "snapshots" s '
    'WHERE s."aggregate_type" = %(aggregate_type)s AND s."aggregate_id" = %(aggregate_id)s '
    'AND s."last_sequence" > %(after_sequence)s AND NOT EXISTS (SELECT 1 FROM "events" e '
    'WHERE e."aggregate_type" = %(aggregate_type)s AND e."aggregate_id" = %(aggregate_id)s '
    'AND e."sequence" = %(after_sequence)s + 1)'
)
LAST_SEQUENCE = (
    'SELECT greatest((SELECT max("sequence") FROM "events" WHERE '
    f"{_AGGREGATE}), "
    f'(SELECT "last_sequence" FROM "snapshots" WHERE {_AGGREGATE}), 0)'
)

READ_ALL = (
    f'SELECT {_EVENT} FROM "events" WHERE "position" > %(after_position)s '
    f'AND "position" < {_HORIZON} ORDER BY "position" LIMIT %(limit)s'
)
READ_ALL_OF_TYPE = (
    f'SELECT {_EVENT} FROM "events" WHERE "aggregate_type" = %(aggregate_type)s '
    f'AND "position" > %(after_position)s AND "position" < {_HORIZON} '
    'ORDER BY "position" LIMIT %(limit)s'
)
# wait_for's check: is an event past after_position readable? One probe of the position index.
EVENTS_READABLE_AFTER = (
    'SELECT EXISTS (SELECT 1 FROM "events" WHERE "position" > %(after_position)s '
    f'AND "position" < {_HORIZON})'
)

# Replaces the stored snapshot only with a later one, or with a newer snapshot_version at the
# same or a later sequence (a schema bump); never one past the aggregate's last sequence.
SAVE_SNAPSHOT = (
    'INSERT INTO "snapshots" AS s ("aggregate_type", "aggregate_id", "last_sequence", '
    '"snapshot_version", "payload") '
    "SELECT %(aggregate_type)s, %(aggregate_id)s, %(last_sequence)s, %(snapshot_version)s, "
    "%(payload)s::jsonb "
    f"WHERE %(last_sequence)s <= ({LAST_SEQUENCE}) "
    'ON CONFLICT ("aggregate_type", "aggregate_id") DO UPDATE SET '
    '"last_sequence" = excluded."last_sequence", '
    '"snapshot_version" = excluded."snapshot_version", "payload" = excluded."payload", '
    '"taken_at" = now() '
    'WHERE s."last_sequence" < excluded."last_sequence" OR (s."snapshot_version" < '
    'excluded."snapshot_version" AND s."last_sequence" <= excluded."last_sequence") '
    'RETURNING s."taken_at"'
)
SELECT_SNAPSHOT = (
    'SELECT "aggregate_type", "aggregate_id", "last_sequence", "snapshot_version", "payload", '
    f'"taken_at" FROM "snapshots" WHERE {_AGGREGATE}'
)
COMPACT_EVENTS = (
    'DELETE FROM "events" e USING "snapshots" s '
    'WHERE s."aggregate_type" = %(aggregate_type)s AND s."aggregate_id" = %(aggregate_id)s '
    'AND e."aggregate_type" = s."aggregate_type" AND e."aggregate_id" = s."aggregate_id" '
    'AND e."sequence" <= s."last_sequence"'
)

SELECT_CHECKPOINT = 'SELECT "position", "version" FROM "checkpoints" WHERE "name" = %(name)s'
# project(): the checkpoint row is the projection's lock, held to the end of the transaction;
# a second projector of the name waits here, then reads from the position the first committed.
LOCK_CHECKPOINT = f"{SELECT_CHECKPOINT} FOR UPDATE"
# the row of a new name; inserted rows are locked by their transaction like updated ones
CREATE_CHECKPOINT = (
    'INSERT INTO "checkpoints" ("name") VALUES (%(name)s) ON CONFLICT ("name") DO NOTHING '
    'RETURNING "position", "version"'
)
# forward only: the same position writes nothing, a lower one no row (the caller then reads)
ADVANCE_CHECKPOINT = (
    'INSERT INTO "checkpoints" AS c ("name", "position") VALUES (%(name)s, %(position)s) '
    'ON CONFLICT ("name") DO UPDATE SET "position" = excluded."position", "updated_at" = now() '
    'WHERE c."position" < excluded."position" RETURNING c."position"'
)
SET_CHECKPOINT = (
    'UPDATE "checkpoints" SET "position" = %(position)s, "updated_at" = now() '
    'WHERE "name" = %(name)s'
)
RESET_CHECKPOINT = (
    'UPDATE "checkpoints" SET "position" = 0, "version" = %(version)s, "updated_at" = now() '
    'WHERE "name" = %(name)s'
)
