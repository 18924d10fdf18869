"""Statements of the trade-batching model: fills, executions, accumulators, links, event queue.

Reads are built with PyPika. The writes are single statements made of data-modifying CTEs, so
that recording a fill is one round trip and starting an execution another; PyPika cannot build
those, so they are spelled out here, with names from ``tables``.

Locking: every write to a symbol's fills, executions and links happens in a transaction that
has updated the symbol's ``trade_accumulators`` row (recording a fill upserts it first;
completing or failing an execution updates it in the same statement). That row is the symbol's
lock, held to the end of the transaction. Writers of one symbol queue on it; writers of
different symbols never meet. READ COMMITTED is enough: each statement that reads the symbol's
open fills starts after the lock is held, so it sees every committed change.
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
    "COUNT_UNPROCESSED_EVENTS",
    "ENQUEUE_EVENT",
    "FAIL_EXECUTION",
    "MARK_EVENT_PROCESSED",
    "RECORD_FILL",
    "SELECT_ACCUMULATOR",
    "SELECT_ACCUMULATORS",
    "SELECT_EVENT_BY_ID",
    "SELECT_EXECUTION_BY_ID",
    "SELECT_EXECUTION_LINKS",
    "SELECT_FILL_BY_KEY",
    "SELECT_PENDING_EXECUTIONS",
    "SELECT_PENDING_EXECUTIONS_OF_SYMBOL",
    "START_EXECUTION",
    "list_fills",
    "list_fills_statements",
]


def _param(name: str) -> Parameter:
    return Parameter(f"%({name})s")


def _listed(columns: tuple[str, ...], prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{c}"' for c in columns)


_FILL = [FILLS.field(c) for c in FILL_COLUMNS]
_EXECUTION = [EXECUTIONS.field(c) for c in EXECUTION_COLUMNS]
_EXECUTION_LIST = _listed(EXECUTION_COLUMNS)

# Store the fill (nothing when (tx_hash, log_index) is stored: then no row comes back) and add
# its shares to the symbol's accumulator, creating it on the symbol's first fill. The upsert
# takes the accumulator's row lock: the symbol is ours until the transaction ends. One row back:
# the fill's id and the accumulator after the addition.
RECORD_FILL = f"""\
WITH fill AS (
    INSERT INTO "onchain_trades" ({_listed(FILL_COLUMNS[:6])}, "created_at", "unlinked_shares")
    VALUES (%(tx_hash)s, %(log_index)s, %(symbol)s, %(amount)s, %(direction)s, %(price_usdc)s,
            COALESCE(%(created_at)s, now()), %(amount)s)
    ON CONFLICT ("tx_hash", "log_index") DO NOTHING
    RETURNING "id"
)
INSERT INTO "trade_accumulators" AS a ("symbol", "accumulated_long", "accumulated_short")
SELECT %(symbol)s, %(long)s, %(short)s FROM fill
ON CONFLICT ("symbol") DO UPDATE SET
    "accumulated_long" = a."accumulated_long" + EXCLUDED."accumulated_long",
    "accumulated_short" = a."accumulated_short" + EXCLUDED."accumulated_short",
    "last_updated" = now()
RETURNING (SELECT "id" FROM fill), a."accumulated_long", a."accumulated_short",
    a."pending_execution_id\""""

# Start an execution of %(shares)s whole shares on one side of a symbol whose accumulator row
# this transaction holds, and no execution pending. Its shares are drawn from the side's open
# fills, oldest first: each fill gives min(what it has left, what is still missing), so the
# last one drawn may be split. The links record the fractions; the accumulator gives up the
# shares and points at the execution. The last two columns let the caller check that the
# fills covered the shares exactly and that the accumulator row was there.
START_EXECUTION = f"""\
WITH execution AS (
    INSERT INTO "schwab_executions" ("symbol", "shares", "direction")
    VALUES (%(symbol)s, %(shares)s, %(direction)s)
    RETURNING {_EXECUTION_LIST}
), open AS (
    SELECT "id", "unlinked_shares",
        sum("unlinked_shares") OVER (ORDER BY "id") - "unlinked_shares" AS before
    FROM "onchain_trades"
    WHERE "symbol" = %(symbol)s AND "direction" = %(direction)s AND "unlinked_shares" > 0
), drawn AS (
    SELECT "id", LEAST("unlinked_shares", %(shares)s - before) AS shares
    FROM open
    WHERE before < %(shares)s
), linked AS (
    INSERT INTO "trade_execution_links" ("trade_id", "execution_id", "contributed_shares")
    SELECT drawn."id", execution."id", drawn.shares FROM drawn CROSS JOIN execution
    RETURNING "trade_id", "contributed_shares"
), consumed AS (
    UPDATE "onchain_trades" AS t
    SET "unlinked_shares" = t."unlinked_shares" - linked."contributed_shares"
    FROM linked
    WHERE t."id" = linked."trade_id"
    RETURNING linked."contributed_shares"
), accumulator AS (
    UPDATE "trade_accumulators" AS a SET
        "accumulated_long" = a."accumulated_long"
            - CASE WHEN execution."direction" = 'BUY' THEN execution."shares" ELSE 0 END,
        "accumulated_short" = a."accumulated_short"
            - CASE WHEN execution."direction" = 'SELL' THEN execution."shares" ELSE 0 END,
        "pending_execution_id" = execution."id",
        "last_updated" = now()
    FROM execution
    WHERE a."symbol" = execution."symbol"
    RETURNING a."symbol"
)
SELECT {_listed(EXECUTION_COLUMNS, "execution.")},
    (SELECT coalesce(sum("contributed_shares"), 0) FROM consumed),
    (SELECT count(*) FROM accumulator)
FROM execution"""

# PENDING -> COMPLETED, and the symbol's pending slot freed, in one statement. No row back when
# the execution is not PENDING (or does not exist). The execution's row lock comes first, then
# the accumulator's; the reverse order never happens, since a transaction holding a symbol's
# accumulator touches an execution only when none is pending. The accumulator's columns are
# NULL if the symbol has none (imported data): then nothing more can start.
COMPLETE_EXECUTION = f"""\
WITH done AS (
    UPDATE "schwab_executions" SET
        "status" = 'COMPLETED', "order_id" = %(order_id)s, "price_cents" = %(price_cents)s,
        "executed_at" = now()
    WHERE "id" = %(id)s AND "status" = 'PENDING'
    RETURNING {_EXECUTION_LIST}
), freed AS (
    UPDATE "trade_accumulators" AS a SET "pending_execution_id" = NULL, "last_updated" = now()
    FROM done
    WHERE a."symbol" = done."symbol"
    RETURNING a."accumulated_long", a."accumulated_short"
)
SELECT {_listed(EXECUTION_COLUMNS, "done.")}, freed."accumulated_long", freed."accumulated_short"
FROM done LEFT JOIN freed ON true"""

# PENDING -> FAILED: the shares its links drew go back to those fills and to the accumulator,
# available to the next execution; the links stay as history. What the accumulator gets back
# is what the fills got back, so the two agree even on imported data.
FAIL_EXECUTION = f"""\
WITH failed AS (
    UPDATE "schwab_executions" SET "status" = 'FAILED', "executed_at" = now()
    WHERE "id" = %(id)s AND "status" = 'PENDING'
    RETURNING {_EXECUTION_LIST}
), restored AS (
    UPDATE "onchain_trades" AS t
    SET "unlinked_shares" = t."unlinked_shares" + l."contributed_shares"
    FROM "trade_execution_links" AS l, failed
    WHERE l."execution_id" = failed."id" AND t."id" = l."trade_id"
    RETURNING l."contributed_shares"
), given_back AS (
    SELECT coalesce(sum("contributed_shares"), 0) AS shares FROM restored
), freed AS (
    UPDATE "trade_accumulators" AS a SET
        "accumulated_long" = a."accumulated_long"
            + CASE WHEN failed."direction" = 'BUY' THEN given_back.shares ELSE 0 END,
        "accumulated_short" = a."accumulated_short"
            + CASE WHEN failed."direction" = 'SELL' THEN given_back.shares ELSE 0 END,
        "pending_execution_id" = NULL,
        "last_updated" = now()
    FROM failed, given_back
    WHERE a."symbol" = failed."symbol"
    RETURNING a."accumulated_long", a."accumulated_short"
)
SELECT {_listed(EXECUTION_COLUMNS, "failed.")}, freed."accumulated_long", freed."accumulated_short"
FROM failed LEFT JOIN freed ON true"""

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
# The oldest unprocessed event, locked until the claiming transaction ends; SKIP LOCKED: a
# worker passes over the events other workers hold instead of waiting for them.
CLAIM_NEXT_EVENT = (
    Query.from_(EVENTS)
    .select(*_EVENT)
    .where(EVENTS.processed_at.isnull())
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
COUNT_UNPROCESSED_EVENTS = (
    Query.from_(EVENTS).select(fn.Count("*")).where(EVENTS.processed_at.isnull()).get_sql()
)


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
