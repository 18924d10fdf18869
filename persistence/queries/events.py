"""Statements of the durable event queue: enqueue, claim (a row lock), mark, fail, revive.

A claim is ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the worker's transaction (see
``operations.events``); failed attempts and dead letters are migration 0004's columns.
"""

from __future__ import annotations

from pypika import PostgreSQLQuery as Query
from pypika import functions as fn

from persistence.queries.build import PagedList, columns, param
from persistence.tables import EVENT_COLUMNS, EVENTS

__all__ = [
    "CLAIM_NEXT_EVENT",
    "COUNT_DEAD_LETTERS",
    "COUNT_UNPROCESSED_EVENTS",
    "ENQUEUE_EVENT",
    "MARK_EVENT_FAILED",
    "MARK_EVENT_PROCESSED",
    "REVIVE_EVENT",
    "SELECT_EVENT_BY_ID",
    "list_dead_letters",
]

_EVENT = columns(EVENTS, EVENT_COLUMNS)
# the payload arrives as JSON text (validated by the caller) and is cast here
ENQUEUE_EVENT = """\
INSERT INTO "event_queue" ("tx_hash", "log_index", "block_number", "payload")
VALUES (%(tx_hash)s, %(log_index)s, %(block_number)s, %(payload)s::jsonb)
ON CONFLICT ("tx_hash", "log_index") DO NOTHING
RETURNING "id\""""
# An event that may still be processed: neither processed nor a dead letter (migration 0004's
# partial index event_queue_live_idx holds exactly these, in claim order).
_LIVE = EVENTS.processed_at.isnull() & EVENTS.dead_at.isnull()
# The oldest live event whose backoff, if any, is over, locked until the claiming transaction
# ends; SKIP LOCKED: a worker passes over the events other workers hold instead of waiting for
# them. now() is the claiming transaction's start: an event is never claimed early.
CLAIM_NEXT_EVENT = (
    Query.from_(EVENTS)
    .select(*_EVENT)
    .where(_LIVE & (EVENTS.next_attempt_at.isnull() | (EVENTS.next_attempt_at <= fn.Now())))
    .orderby(EVENTS.block_number)
    .orderby(EVENTS.log_index)
    .limit(1)
    .for_update(skip_locked=True)
    .get_sql()
)
MARK_EVENT_PROCESSED = (
    Query.update(EVENTS)
    .set(EVENTS.processed_at, fn.Now())
    .where((EVENTS.id == param("id")) & EVENTS.processed_at.isnull())
    .returning(EVENTS.id)
    .get_sql()
)
SELECT_EVENT_BY_ID = Query.from_(EVENTS).select(*_EVENT).where(EVENTS.id == param("id")).get_sql()
COUNT_UNPROCESSED_EVENTS = Query.from_(EVENTS).select(fn.Count("*")).where(_LIVE).get_sql()

# One failed attempt (migration 0004). The attempt's time is clock_timestamp(), not now(): the
# handler may have run long after its transaction began, and the backoff counts from the failure.
# The backoff is retry_delay * 2^(attempts before this one), at most retry_cap seconds (the
# exponent is bounded so that the double cannot overflow). The attempt that reaches
# max_attempts makes the event a dead letter: no next attempt. An event dead already stays dead
# with its first dead_at; the attempt and its error are still recorded.
_EVENT_LIST = ", ".join(f'"event_queue"."{column}"' for column in EVENT_COLUMNS)
MARK_EVENT_FAILED = f"""\
UPDATE "event_queue" SET
    "attempts" = "attempts" + 1,
    "last_error" = %(reason)s,
    "last_failed_at" = failure.at,
    "dead_at" = CASE
        WHEN "dead_at" IS NOT NULL THEN "dead_at"
        WHEN "attempts" + 1 >= %(max_attempts)s::integer THEN failure.at
    END,
    "next_attempt_at" = CASE
        WHEN "dead_at" IS NULL AND "attempts" + 1 < %(max_attempts)s::integer
        THEN failure.at + make_interval(secs => least(
            %(retry_delay)s::float8 * power(2, least("attempts", 30)), %(retry_cap)s::float8))
    END
FROM (SELECT clock_timestamp() AS at) AS failure
WHERE "event_queue"."id" = %(id)s AND "processed_at" IS NULL
RETURNING {_EVENT_LIST}"""
# A dead letter back in the queue with a fresh budget of attempts; last_error and
# last_failed_at stay, as history.
REVIVE_EVENT = (
    Query.update(EVENTS)
    .set(EVENTS.attempts, 0)
    .set(EVENTS.next_attempt_at, None)
    .set(EVENTS.dead_at, None)
    .where((EVENTS.id == param("id")) & EVENTS.dead_at.notnull() & EVENTS.processed_at.isnull())
    .returning(*_EVENT)
    .get_sql()
)
# a dead letter: no worker claims it until it is revived, nor once it is marked processed
# (migration 0004's partial index event_queue_dead_idx holds exactly these, by id)
_DEAD = EVENTS.dead_at.notnull() & EVENTS.processed_at.isnull()
list_dead_letters = PagedList("list_dead_letters", EVENTS, EVENT_COLUMNS, where=_DEAD)
COUNT_DEAD_LETTERS = Query.from_(EVENTS).select(fn.Count("*")).where(_DEAD).get_sql()
