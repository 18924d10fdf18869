"""Statements of trades: insert, read, complete, list, count, and the bulk insert by COPY.

COPY and the staging table are outside PyPika's reach; they are spelled out below, with names
from ``tables``.
"""

from __future__ import annotations

from functools import cache

from pypika import PostgreSQLQuery as Query
from pypika import functions as fn

from persistence.queries.build import PagedList, columns, param, period, quoted
from persistence.tables import TRADE_COLUMNS, TRADES

__all__ = [
    "ADVANCE_TRADE_ID",
    "COPY_TRADES_STAGE",
    "COUNT_TRADES",
    "COUNT_TRADES_BY_STATUS",
    "CREATE_TRADES_STAGE",
    "INSERT_TRADE",
    "INSERT_TRADES_FROM_STAGE",
    "INSERT_TRADE_WITH_ID",
    "SELECT_PENDING_TRADES",
    "SELECT_TRADE_BY_ID",
    "SELECT_TRADE_BY_KEY",
    "TRADES_STAGE",
    "TRUNCATE_TRADES_STAGE",
    "UPDATE_TRADE_STATUS",
    "copy_trades",
    "list_trades",
]

_ALL = columns(TRADES, TRADE_COLUMNS)
_KEY = (TRADES.tx_hash == param("tx_hash")) & (TRADES.log_index == param("log_index"))


def _insert_trade(with_id: bool) -> str:
    names = tuple(c for c in TRADE_COLUMNS if with_id or c != "id")
    values = [fn.Coalesce(param(c), fn.Now()) if c == "created_at" else param(c) for c in names]
    sql: str = (
        Query.into(TRADES)
        .columns(*columns(TRADES, names))
        .insert(*values)
        .on_conflict(TRADES.tx_hash, TRADES.log_index)
        .do_nothing()
        .returning(TRADES.id)
        .get_sql()
    )
    return sql


# id is None when (tx_hash, log_index) already exists: the bot's replay safety
INSERT_TRADE = _insert_trade(with_id=False)
INSERT_TRADE_WITH_ID = _insert_trade(with_id=True)

SELECT_TRADE_BY_KEY = Query.from_(TRADES).select(*_ALL).where(_KEY).get_sql()
SELECT_TRADE_BY_ID = Query.from_(TRADES).select(*_ALL).where(TRADES.id == param("id")).get_sql()

# Only PENDING rows match, so of two racing workers exactly one updates; the other gets no row.
UPDATE_TRADE_STATUS = (
    Query.update(TRADES)
    .set(TRADES.status, param("status"))
    .set(TRADES.completed_at, fn.Now())
    .set(TRADES.schwab_order_id, fn.Coalesce(param("schwab_order_id"), TRADES.schwab_order_id))
    .set(
        TRADES.schwab_price_per_share_cents,
        fn.Coalesce(param("schwab_price_per_share_cents"), TRADES.schwab_price_per_share_cents),
    )
    .where(_KEY & (TRADES.status == "PENDING"))
    .returning(*_ALL)
    .get_sql()
)

SELECT_PENDING_TRADES = (
    Query.from_(TRADES).select(*_ALL).where(TRADES.status == "PENDING").orderby(TRADES.id).get_sql()
)
COUNT_TRADES = Query.from_(TRADES).select(fn.Count("*")).get_sql()
COUNT_TRADES_BY_STATUS = (
    Query.from_(TRADES).select(fn.Count("*")).where(TRADES.status == param("status")).get_sql()
)

list_trades = PagedList(
    "list_trades",
    TRADES,
    TRADE_COLUMNS,
    filters={
        "status": TRADES.status == param("status"),
        "ticker": TRADES.schwab_ticker == param("ticker"),
        **period(TRADES.created_at),
    },
)

# Bulk insert: COPY into a staging table, then one INSERT ... ON CONFLICT DO NOTHING per batch.
# ON COMMIT DROP: a pooled connection never keeps the table past the transaction.
TRADES_STAGE = "persistence_trades_stage"
_QUOTED_COLUMNS = quoted(TRADE_COLUMNS)
# the column types of trades without its constraints: id and created_at may be NULL here
CREATE_TRADES_STAGE = (
    f'CREATE TEMPORARY TABLE IF NOT EXISTS "{TRADES_STAGE}" ON COMMIT DROP AS '
    f'SELECT {_QUOTED_COLUMNS} FROM "trades" WITH NO DATA'
)
COPY_TRADES_STAGE = f'COPY "{TRADES_STAGE}" ({_QUOTED_COLUMNS}) FROM STDIN'
_STAGE_COLUMNS = ",".join(
    # rows without id take the identity's next value; rows without created_at take now()
    "COALESCE(\"id\", nextval(pg_get_serial_sequence('trades', 'id')))"
    if c == "id"
    else 'COALESCE("created_at", now())'
    if c == "created_at"
    else f'"{c}"'
    for c in TRADE_COLUMNS
)
INSERT_TRADES_FROM_STAGE = (
    f'INSERT INTO "trades" ({_QUOTED_COLUMNS}) '
    f'SELECT {_STAGE_COLUMNS} FROM "{TRADES_STAGE}" '
    'ON CONFLICT ("tx_hash", "log_index") DO NOTHING'
)
TRUNCATE_TRADES_STAGE = f'TRUNCATE "{TRADES_STAGE}"'


@cache
def copy_trades(*, with_id: bool, with_created_at: bool) -> tuple[str, tuple[str, ...]]:
    """COPY straight into trades, and its columns: a column a batch leaves out takes its default."""
    names = tuple(
        c
        for c in TRADE_COLUMNS
        if (c != "id" or with_id) and (c != "created_at" or with_created_at)
    )
    return f'COPY "trades" ({quoted(names)}) FROM STDIN', names


# after rows with explicit ids, move the identity past them so later inserts do not collide
ADVANCE_TRADE_ID = (
    "SELECT setval(pg_get_serial_sequence('trades', 'id'), "
    'GREATEST((SELECT max("id") FROM "trades"), '
    "(SELECT last_value FROM trades_id_seq)))"
)
