"""Statements of the trade-batching model: fills, executions, accumulators, links, event queue.

Reads and the queue are built with PyPika. The writes of fills and executions call the
functions of migration 0002, one round trip each.

Locking: every write to a symbol's fills, executions and links happens after its
``trade_accumulators`` row is locked (recording a fill upserts it; completing or failing an
execution locks it first). That row is the symbol's lock, held to the end of the transaction.
Writers of one symbol queue on it; writers of different symbols never meet. READ COMMITTED is
enough: each statement that reads the symbol's open fills starts after the lock is held, so it
sees every committed change.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from pypika import Order, Parameter
from pypika import PostgreSQLQuery as Query
from pypika import functions as fn
from pypika.terms import Criterion

from persistence.tables import (
    ACCUMULATOR_COLUMNS,
    ACCUMULATORS,
    EVENT_COLUMNS,
    EVENTS,
    EXECUTION_COLUMNS,
    EXECUTIONS,
    FILL_COLUMNS,
    FILLS,
    LINK_COLUMNS,
    LINKS,
)

__all__ = [
    "CLAIM_NEXT_EVENT",
    "COMPLETE_EXECUTION",
    "COUNT_DEAD_LETTERS",
    "COUNT_UNPROCESSED_EVENTS",
    "ENQUEUE_EVENT",
    "FAIL_EXECUTION",
    "MARK_EVENT_FAILED",
    "MARK_EVENT_PROCESSED",
    "RECORD_FILL",
    "REVIVE_EVENT",
    "SELECT_ACCUMULATOR",
    "SELECT_ACCUMULATORS",
    "SELECT_DEAD_LETTERS",
    "SELECT_EVENT_BY_ID",
    "SELECT_EXECUTION_BY_ID",
    "SELECT_EXECUTION_LINKS",
    "SELECT_FILL_BY_KEY",
    "SELECT_PENDING_EXECUTIONS",
    "SELECT_PENDING_EXECUTIONS_OF_SYMBOL",
    "list_fills",
    "list_fills_statements",
]


def _param(name: str) -> Parameter:
    return Parameter(f"%({name})s")


_FILL = [FILLS.field(c) for c in FILL_COLUMNS]
_EXECUTION = [EXECUTIONS.field(c) for c in EXECUTION_COLUMNS]

# The units of work are functions of migration 0002 (record_fill, complete_execution,
# fail_execution, and start_due_execution which the three share): one round trip each, so the
# symbol's lock is held only while the server works. Their SQL, and why, is in that file.
# Parameters are cast to the functions' types so that any int or str psycopg sends resolves.
# record_fill is migration 0005's: it answers a repeat with the stored fill (already_stored).
RECORD_FILL = (
    'SELECT r."trade_id", r."already_stored", (r."execution").* FROM record_fill('
    "%(tx_hash)s::text, %(log_index)s::integer, %(symbol)s::text, %(amount)s::numeric, "
    "%(direction)s::text, %(price_usdc)s::numeric, %(created_at)s::timestamptz) AS r"
)
COMPLETE_EXECUTION = (
    "SELECT * FROM complete_execution(%(id)s::bigint, %(order_id)s::text, %(price_cents)s::numeric)"
)
FAIL_EXECUTION = "SELECT * FROM fail_execution(%(id)s::bigint)"

SELECT_FILL_BY_KEY = (
    Query.from_(FILLS)
    .select(*_FILL)
    .where((FILLS.tx_hash == _param("tx_hash")) & (FILLS.log_index == _param("log_index")))
    .get_sql()
)

SELECT_EXECUTION_BY_ID = (
    Query.from_(EXECUTIONS).select(*_EXECUTION).where(EXECUTIONS.id == _param("id")).get_sql()
)
SELECT_PENDING_EXECUTIONS = (
    Query.from_(EXECUTIONS)
    .select(*_EXECUTION)
    .where(EXECUTIONS.status == "PENDING")
    .orderby(EXECUTIONS.id)
    .get_sql()
)
SELECT_PENDING_EXECUTIONS_OF_SYMBOL = (
    Query.from_(EXECUTIONS)
    .select(*_EXECUTION)
    .where((EXECUTIONS.status == "PENDING") & (EXECUTIONS.symbol == _param("symbol")))
    .orderby(EXECUTIONS.id)
    .get_sql()
)
SELECT_EXECUTION_LINKS = (
    Query.from_(LINKS)
    .select(*[LINKS.field(c) for c in LINK_COLUMNS])
    .where(LINKS.execution_id == _param("id"))
    .orderby(LINKS.trade_id)
    .get_sql()
)

_ACCUMULATOR = [ACCUMULATORS.field(c) for c in ACCUMULATOR_COLUMNS]
SELECT_ACCUMULATOR = (
    Query.from_(ACCUMULATORS)
    .select(*_ACCUMULATOR)
    .where(ACCUMULATORS.symbol == _param("symbol"))
    .get_sql()
)
SELECT_ACCUMULATORS = (
    Query.from_(ACCUMULATORS).select(*_ACCUMULATOR).orderby(ACCUMULATORS.symbol).get_sql()
)

_EVENT = [EVENTS.field(c) for c in EVENT_COLUMNS]
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
    .where((EVENTS.id == _param("id")) & EVENTS.processed_at.isnull())
    .returning(EVENTS.id)
    .get_sql()
)
SELECT_EVENT_BY_ID = Query.from_(EVENTS).select(*_EVENT).where(EVENTS.id == _param("id")).get_sql()
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
    .where((EVENTS.id == _param("id")) & EVENTS.dead_at.notnull() & EVENTS.processed_at.isnull())
    .returning(*_EVENT)
    .get_sql()
)
_DEAD = EVENTS.dead_at.notnull() & EVENTS.processed_at.isnull()
SELECT_DEAD_LETTERS = (
    Query.from_(EVENTS)
    .select(*_EVENT)
    .where(_DEAD & (EVENTS.id > _param("after_id")))
    .orderby(EVENTS.id)
    .limit(_param("limit"))
    .get_sql()
)
COUNT_DEAD_LETTERS = Query.from_(EVENTS).select(fn.Count("*")).where(_DEAD).get_sql()


@cache
def _list_fills_sql(symbol: bool, direction: bool, since: bool, until: bool) -> str:
    conditions: list[Criterion] = [FILLS.id > _param("after_id")]
    if symbol:
        conditions.append(FILLS.symbol == _param("symbol"))
    if direction:
        conditions.append(FILLS.direction == _param("direction"))
    if since:
        conditions.append(FILLS.created_at >= _param("since"))
    if until:
        conditions.append(FILLS.created_at < _param("until"))
    sql: str = (
        Query.from_(FILLS)
        .select(*_FILL)
        .where(Criterion.all(conditions))
        .orderby(FILLS.id, order=Order.asc)
        .limit(_param("limit"))
        .get_sql()
    )
    return sql


def list_fills(
    *,
    symbol: str | None,
    direction: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    after_id: int,
) -> tuple[str, dict[str, Any]]:
    """SQL and parameters for one page of fills, oldest id first, after ``after_id``."""
    sql = _list_fills_sql(
        symbol is not None, direction is not None, since is not None, until is not None
    )
    params = {
        "symbol": symbol,
        "direction": direction,
        "since": since,
        "until": until,
        "limit": limit,
        "after_id": after_id,
    }
    return sql, params


def list_fills_statements() -> dict[str, str]:
    """Every variant of the fills listing, by its filters."""
    variants = {}
    for flags in range(16):
        symbol, direction, since, until = (bool(flags & bit) for bit in (1, 2, 4, 8))
        variants[
            f"list_fills(symbol={symbol}, direction={direction}, since={since}, until={until})"
        ] = _list_fills_sql(symbol, direction, since, until)
    return variants
