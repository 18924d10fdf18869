"""Every statement, built with PyPika once; builders are pure (SQL and parameters, no I/O).

Values always travel as bound parameters (psycopg's ``%(name)s``), never inside the SQL. PyPika
renders ``%`` in literals unescaped and turns Decimal and datetime into text when it
parameterises by itself, so statements here use explicit ``Parameter`` placeholders only, and
no literal holds a ``%`` (a test checks every statement). ``print(queries.INSERT_TRADE)`` shows
one; ``statements()`` returns them all, and ``python -m persistence.queries`` prints them.

COPY and the staging table are outside PyPika's reach; they are spelled out below, with names
from ``tables``.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from pypika import Order, Parameter
from pypika import PostgreSQLQuery as Query
from pypika import functions as fn
from pypika.terms import Criterion, Field

from persistence.queries import batching
from persistence.tables import (
    SCHWAB_AUTH,
    SCHWAB_AUTH_COLUMNS,
    SCHWAB_AUTH_SEALED,
    TRADE_COLUMNS,
    TRADES,
)

__all__ = [
    "ADVANCE_TRADE_ID",
    "COPY_TRADES_STAGE",
    "COUNT_SCHWAB_AUTH_BY_KEY",
    "COUNT_TRADES",
    "COUNT_TRADES_BY_STATUS",
    "CREATE_TRADES_STAGE",
    "INSERT_SCHWAB_AUTH_IF_ABSENT",
    "INSERT_TRADE",
    "INSERT_TRADES_FROM_STAGE",
    "INSERT_TRADE_WITH_ID",
    "SELECT_PENDING_TRADES",
    "SELECT_SCHWAB_AUTH",
    "SELECT_SCHWAB_AUTH_FOR_UPDATE",
    "SELECT_TRADE_BY_ID",
    "SELECT_TRADE_BY_KEY",
    "TRUNCATE_TRADES_STAGE",
    "UPDATE_SCHWAB_AUTH_TOKENS",
    "UPDATE_TRADE_STATUS",
    "UPSERT_SCHWAB_AUTH",
    "copy_trades",
    "list_trades",
    "quoted",
    "statements",
]


def _param(name: str) -> Parameter:
    return Parameter(f"%({name})s")


def _columns(names: tuple[str, ...]) -> list[Field]:
    return [TRADES.field(name) for name in names]


_ALL = _columns(TRADE_COLUMNS)
_KEY = (TRADES.tx_hash == _param("tx_hash")) & (TRADES.log_index == _param("log_index"))


def _insert_trade(with_id: bool) -> str:
    names = tuple(c for c in TRADE_COLUMNS if with_id or c != "id")
    values = [fn.Coalesce(_param(c), fn.Now()) if c == "created_at" else _param(c) for c in names]
    sql: str = (
        Query.into(TRADES)
        .columns(*_columns(names))
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
SELECT_TRADE_BY_ID = Query.from_(TRADES).select(*_ALL).where(TRADES.id == _param("id")).get_sql()

# Only PENDING rows match, so of two racing workers exactly one updates; the other gets no row.
UPDATE_TRADE_STATUS = (
    Query.update(TRADES)
    .set(TRADES.status, _param("status"))
    .set(TRADES.completed_at, fn.Now())
    .set(TRADES.schwab_order_id, fn.Coalesce(_param("schwab_order_id"), TRADES.schwab_order_id))
    .set(
        TRADES.schwab_price_per_share_cents,
        fn.Coalesce(_param("schwab_price_per_share_cents"), TRADES.schwab_price_per_share_cents),
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
    Query.from_(TRADES).select(fn.Count("*")).where(TRADES.status == _param("status")).get_sql()
)


@cache
def _list_sql(status: bool, ticker: bool, since: bool, until: bool) -> str:
    # one statement per combination of filters, built on first use, so each can use its index
    conditions: list[Criterion] = [TRADES.id > _param("after_id")]
    if status:
        conditions.append(TRADES.status == _param("status"))
    if ticker:
        conditions.append(TRADES.schwab_ticker == _param("ticker"))
    if since:
        conditions.append(TRADES.created_at >= _param("since"))
    if until:
        conditions.append(TRADES.created_at < _param("until"))
    sql: str = (
        Query.from_(TRADES)
        .select(*_ALL)
        .where(Criterion.all(conditions))
        .orderby(TRADES.id, order=Order.asc)
        .limit(_param("limit"))
        .get_sql()
    )
    return sql


def list_trades(
    *,
    status: str | None,
    ticker: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    after_id: int,
) -> tuple[str, dict[str, Any]]:
    """SQL and parameters for one page of trades, oldest id first, after ``after_id``."""
    sql = _list_sql(status is not None, ticker is not None, since is not None, until is not None)
    params = {
        "status": status,
        "ticker": ticker,
        "since": since,
        "until": until,
        "limit": limit,
        "after_id": after_id,
    }
    return sql, params


# Bulk insert: COPY into a staging table, then one INSERT ... ON CONFLICT DO NOTHING per batch.
# ON COMMIT DROP: a pooled connection never keeps the table past the transaction.
TRADES_STAGE = "persistence_trades_stage"


def quoted(columns: tuple[str, ...]) -> str:
    """Column names as a quoted SQL list, for the statements PyPika cannot build (COPY)."""
    return ",".join(f'"{c}"' for c in columns)


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
    columns = tuple(
        c
        for c in TRADE_COLUMNS
        if (c != "id" or with_id) and (c != "created_at" or with_created_at)
    )
    return f'COPY "trades" ({quoted(columns)}) FROM STDIN', columns


# after rows with explicit ids, move the identity past them so later inserts do not collide
ADVANCE_TRADE_ID = (
    "SELECT setval(pg_get_serial_sequence('trades', 'id'), "
    'GREATEST((SELECT max("id") FROM "trades"), '
    "(SELECT last_value FROM trades_id_seq)))"
)

_AUTH_ALL = (*SCHWAB_AUTH_COLUMNS, *SCHWAB_AUTH_SEALED)


def _write_auth() -> Any:
    # the plain columns are written NULL: a saved row is always sealed
    return (
        Query.into(SCHWAB_AUTH)
        .columns(SCHWAB_AUTH.id, *[SCHWAB_AUTH.field(c) for c in _AUTH_ALL])
        .insert(
            1, *[None if c in ("access_token", "refresh_token") else _param(c) for c in _AUTH_ALL]
        )
    )


UPSERT_SCHWAB_AUTH = (
    _write_auth()
    .on_conflict(SCHWAB_AUTH.id)
    .do_update(SCHWAB_AUTH.access_token)
    .do_update(SCHWAB_AUTH.access_token_fetched_at)
    .do_update(SCHWAB_AUTH.refresh_token)
    .do_update(SCHWAB_AUTH.refresh_token_fetched_at)
    .do_update(SCHWAB_AUTH.access_token_sealed)
    .do_update(SCHWAB_AUTH.refresh_token_sealed)
    .do_update(SCHWAB_AUTH.token_key_id)
    .get_sql()
)
# the SQLite import: tokens already stored are kept
INSERT_SCHWAB_AUTH_IF_ABSENT = _write_auth().on_conflict(SCHWAB_AUTH.id).do_nothing().get_sql()
SELECT_SCHWAB_AUTH = (
    Query.from_(SCHWAB_AUTH)
    .select(*[SCHWAB_AUTH.field(c) for c in _AUTH_ALL])
    .where(SCHWAB_AUTH.id == 1)
    .get_sql()
)
# encrypt, rotate and decrypt: the rows locked until the command commits, so a save that
# races them waits and is not overwritten by the tokens they read
SELECT_SCHWAB_AUTH_FOR_UPDATE = (
    Query.from_(SCHWAB_AUTH)
    .select(SCHWAB_AUTH.id, *[SCHWAB_AUTH.field(c) for c in _AUTH_ALL])
    .orderby(SCHWAB_AUTH.id)
    .for_update()
    .get_sql()
)
UPDATE_SCHWAB_AUTH_TOKENS = (
    Query.update(SCHWAB_AUTH)
    .set(SCHWAB_AUTH.access_token, _param("access_token"))
    .set(SCHWAB_AUTH.refresh_token, _param("refresh_token"))
    .set(SCHWAB_AUTH.access_token_sealed, _param("access_token_sealed"))
    .set(SCHWAB_AUTH.refresh_token_sealed, _param("refresh_token_sealed"))
    .set(SCHWAB_AUTH.token_key_id, _param("token_key_id"))
    .where(SCHWAB_AUTH.id == _param("id"))
    .get_sql()
)
COUNT_SCHWAB_AUTH_BY_KEY = (
    Query.from_(SCHWAB_AUTH)
    .select(SCHWAB_AUTH.token_key_id, fn.Count("*"))
    .groupby(SCHWAB_AUTH.token_key_id)
    .get_sql()
)


def statements() -> dict[str, str]:
    """Every fixed statement by name, and each list variant, for docs and debugging."""
    fixed = {
        name: value
        for name, value in globals().items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str) and " " in value
    }
    for flags in range(16):
        status, ticker, since, until = (bool(flags & bit) for bit in (1, 2, 4, 8))
        fixed[f"list_trades(status={status}, ticker={ticker}, since={since}, until={until})"] = (
            _list_sql(status, ticker, since, until)
        )
    fixed.update((name, getattr(batching, name)) for name in batching.__all__ if name.isupper())
    fixed.update(batching.list_fills_statements())
    return fixed
