"""The first layout: the bot's ``trades`` table (and ``schwab_auth``, which ``_auth`` imports).

- read: stream the rows in batches, build each as a :class:`~persistence.Trade` (the library's
  validation), COPY the valid ones into a staging table with the trades' types and no
  constraints, and sum every money column exactly. Memory stays bounded whatever the file size.
- check: nothing of its own (the driver refuses invalid rows).
- write: the staged sums must equal the converted ones; rows whose (tx_hash, log_index) is
  already stored are left as they are (noted); ids are kept and the identity sequence is moved
  past them; an id used by another trade, or a key that repeats once hex is lower-cased, fails.
- verify: every inserted amount against the file, re-read (``_verify``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import psycopg

from persistence import queries
from persistence.converter import trade_copy_row
from persistence.errors import ValidationError
from persistence.import_sqlite._layout import Layout, Run
from persistence.import_sqlite._report import ImportFailed, Problems, Progress
from persistence.import_sqlite._source import open_read_only
from persistence.import_sqlite._target import copy_rows
from persistence.import_sqlite._verify import Comparison
from persistence.import_sqlite.convert import (
    EXACT,
    ROUNDED,
    Invalid,
    shown,
    to_datetime,
    to_decimal,
    validation_column,
)
from persistence.models import AMOUNT, IO_RATIO, PRICE_CENTS, NumericSpec, Trade
from persistence.tables import TRADE_COLUMNS

__all__ = ["BOT_COLUMNS", "LAYOUT", "MONEY_COLUMNS", "STAGE"]

# the money columns of the bot's file: each summed there and in PostgreSQL, then compared
MONEY_COLUMNS: dict[str, NumericSpec] = {
    "onchain_input_amount": AMOUNT,
    "onchain_output_amount": AMOUNT,
    "onchain_io_ratio": IO_RATIO,
    "onchain_price_per_share_cents": PRICE_CENTS,
    "schwab_price_per_share_cents": PRICE_CENTS,
}
TIME_COLUMNS = ("created_at", "completed_at")
# the bot's SQLite columns, in its order (id first): a row's columns are converted in this
# order, so a row with several bad values is reported for the first. Written out, not taken from
# TRADE_COLUMNS: the bot's files never gain a column, and a model field added later keeps its
# default in every imported trade (docs/architecture.md, "Adding a column").
BOT_COLUMNS = (
    "id",
    "tx_hash",
    "log_index",
    "onchain_input_symbol",
    "onchain_input_amount",
    "onchain_output_symbol",
    "onchain_output_amount",
    "onchain_io_ratio",
    "onchain_price_per_share_cents",
    "schwab_ticker",
    "schwab_instruction",
    "schwab_quantity",
    "schwab_price_per_share_cents",
    "status",
    "schwab_order_id",
    "created_at",
    "completed_at",
)
STAGE = queries.TRADES_STAGE  # the bulk insert's staging table: trades' types, no constraints
_STAGE_COLUMNS = queries.quoted(TRADE_COLUMNS)
_NULLABLE = ("schwab_order_id", "id")


@attrs.define
class Trades:
    """What the steps learn, in order: rows read and valid, then already present and inserted."""

    read: int = 0
    valid: int = 0
    sums: dict[str, Decimal] = attrs.field(factory=lambda: dict.fromkeys(MONEY_COLUMNS, Decimal(0)))
    present: int = 0
    inserted: int = 0
    stored_sums: dict[str, Decimal] = attrs.field(factory=dict)


def detect(path: Path, source: sqlite3.Connection, tables: set[str]) -> bool:
    if "trades" not in tables:
        return False
    columns = {row[1] for row in source.execute("PRAGMA table_info(trades)")}
    missing = [c for c in BOT_COLUMNS if c not in columns]
    if missing:
        raise ImportFailed(
            f"{path}: the trades table lacks the bot's column(s) {', '.join(missing)}"
        )
    return True


def _trade_from_sqlite(row: sqlite3.Row, sqlite_id: Any, problems: Problems) -> Trade:
    fields: dict[str, Any] = {}
    for column in BOT_COLUMNS:
        value = row[column]
        if column in MONEY_COLUMNS:
            fields[column] = to_decimal(column, value, MONEY_COLUMNS[column])
        elif column in TIME_COLUMNS:
            fields[column], rounded = to_datetime(column, value)
            if rounded:
                problems.note("trades", sqlite_id, column, shown(column, value), ROUNDED)
        elif value is None and column not in _NULLABLE:
            raise Invalid(column, value, "is NULL, and the column requires a value")
        else:
            fields[column] = value
    if fields["created_at"] is None:
        raise Invalid("created_at", None, "is NULL, and the column requires a value")
    try:
        return Trade(**fields)  # not convert.to_model: a million rows feel its extra call
    except ValidationError as error:
        column = validation_column(error, "row")
        value = row[column] if column in BOT_COLUMNS else None
        raise Invalid(column, value, str(error)) from None


def read(run: Run) -> Trades:
    """COPY every valid trade into the staging table, counting and summing as it goes."""
    data = Trades()
    total = run.source.execute("SELECT count(*) FROM trades").fetchone()[0]
    run.target.execute(queries.CREATE_TRADES_STAGE)
    bar = Progress(total, run.progress, "trades: checked and staged")
    clashing = _same_key_once_lower_cased(run)
    copy_rows(run.target, queries.COPY_TRADES_STAGE, _valid_rows(run, data, clashing, bar))
    return data


def _valid_rows(
    run: Run, data: Trades, clashing: dict[int, list[int]], bar: Progress
) -> Iterator[tuple[Any, ...]]:
    """The COPY rows of the valid trades; every other row is reported."""
    problems, sums = run.problems, data.sums
    read = valid = 0  # locals in the loop, data's once done
    rows = run.source.execute("SELECT * FROM trades ORDER BY id")
    while batch := rows.fetchmany(run.batch_size):
        for row in batch:
            read += 1
            sqlite_id = row["id"]
            if sqlite_id in clashing:
                others = ", ".join(map(str, clashing[sqlite_id]))
                reason = (
                    f"has the (tx_hash, log_index) of id {others} once hex is lower-cased: "
                    "one event stored twice; neither row is imported"
                )
                tx_hash = shown("tx_hash", row["tx_hash"])
                problems.invalid("trades", sqlite_id, "tx_hash", tx_hash, reason)
                continue
            try:
                trade = _trade_from_sqlite(row, sqlite_id, problems)
            except Invalid as error:
                value = shown(error.column, error.value)
                problems.invalid("trades", sqlite_id, error.column, value, error.reason)
                continue
            valid += 1
            for column in MONEY_COLUMNS:
                amount = getattr(trade, column)
                if amount is not None:
                    sums[column] = EXACT.add(sums[column], amount)
            yield trade_copy_row(trade)
        bar.update(read)
    bar.update(read, final=True)
    data.read, data.valid = read, valid


def _same_key_once_lower_cased(run: Run) -> dict[int, list[int]]:
    """The rows whose (tx_hash, log_index) is another row's once hex is lower-cased (SQLite's
    UNIQUE saw two keys): each id with the ids it clashes with, found before anything is
    staged."""
    clashing: dict[int, list[int]] = {}
    for (ids,) in run.source.execute(
        "SELECT group_concat(id) FROM trades GROUP BY lower(tx_hash), log_index HAVING count(*) > 1"
    ):
        group = [int(i) for i in str(ids).split(",")]
        for sqlite_id in group:
            clashing[sqlite_id] = [other for other in group if other != sqlite_id]
    return clashing


def check(run: Run, data: Trades) -> None:
    """Nothing beyond the driver's refusal of invalid rows: a trade stands alone."""


def _sums(conn: psycopg.Connection[Any], query: str) -> tuple[Any, ...]:
    row = conn.execute(query).fetchone()
    assert row is not None
    return tuple(Decimal(0) if value is None else value for value in row)


_STAGE_SUMS = f'SELECT count(*), {", ".join(f"sum({c})" for c in MONEY_COLUMNS)} FROM "{STAGE}"'
_STORED_SUMS = (
    f"SELECT count(*), {', '.join(f'sum(t.{c})' for c in MONEY_COLUMNS)} "
    f'FROM trades t JOIN "{STAGE}" s ON s.id = t.id'
)


def write(run: Run, data: Trades) -> None:
    """Insert the staged trades that are not stored yet."""
    conn, problems = run.target, run.problems
    staged = _sums(conn, _STAGE_SUMS)
    if staged != (data.valid, *data.sums.values()):
        raise ImportFailed(
            f"verification failed: the staged rows' count or sums differ from the source "
            f"({staged[0]} rows for {data.valid}); nothing was imported"
        )
    duplicates = conn.execute(
        "SELECT id, log_index FROM (SELECT id, log_index, row_number() OVER "
        f'(PARTITION BY tx_hash, log_index ORDER BY id) AS n FROM "{STAGE}") d WHERE n > 1'
    ).fetchall()
    for sqlite_id, log_index in duplicates:
        reason = (
            f"repeats the (tx_hash, log_index {log_index}) of an earlier row "
            "once hex is lower-cased"
        )
        problems.invalid("trades", sqlite_id, "tx_hash", "", reason)
    clashes = conn.execute(
        f'SELECT s.id FROM "{STAGE}" s JOIN trades t ON t.id = s.id '
        "WHERE (t.tx_hash, t.log_index) <> (s.tx_hash, s.log_index)"
    ).fetchall()
    for (sqlite_id,) in clashes:
        reason = "is used by another trade in PostgreSQL"
        problems.invalid("trades", sqlite_id, "id", repr(sqlite_id), reason)
    if duplicates or clashes:
        raise ImportFailed(
            f"{len(duplicates)} duplicate key(s) and {len(clashes)} id clash(es); "
            "nothing was imported"
        )
    present = conn.execute(
        f'DELETE FROM "{STAGE}" s USING trades t '
        "WHERE t.tx_hash = s.tx_hash AND t.log_index = s.log_index RETURNING s.id"
    ).fetchall()
    for (sqlite_id,) in present:
        problems.note("trades", sqlite_id, "tx_hash", "", "already stored: kept as it is")
    # with the bot stopped nothing races this; if something does, the unique key fails the import
    inserted = conn.execute(
        f'INSERT INTO trades ({_STAGE_COLUMNS}) SELECT {_STAGE_COLUMNS} FROM "{STAGE}"'
    ).rowcount
    conn.execute(queries.ADVANCE_TRADE_ID)
    if _sums(conn, _STORED_SUMS) != _sums(conn, _STAGE_SUMS) or inserted + len(present) != (
        data.valid
    ):
        raise ImportFailed("verification failed after the insert; nothing was imported")
    data.present, data.inserted = len(present), inserted


_STORED_AMOUNTS = (
    f"SELECT t.id, {', '.join(f't.{c}' for c in MONEY_COLUMNS)} "
    f'FROM trades t JOIN "{STAGE}" s ON s.id = t.id ORDER BY t.id'
)


def verify(run: Run, data: Trades) -> dict[str, str]:
    """Compare every inserted amount with the SQLite file, read again without the conversion.

    Both sides are read in id order and merged, so memory stays bounded: the rows the file has
    and PostgreSQL does not (invalid, or already present) are passed over.
    """
    comparison = Comparison(tuple(MONEY_COLUMNS), rows="trade id", place="the source")
    compared = 0
    with (
        closing(open_read_only(run.path)) as source,
        run.target.cursor(name="persistence_import_verify") as cursor,
    ):
        raw = source.execute(f"SELECT id, {', '.join(MONEY_COLUMNS)} FROM trades ORDER BY id")
        cursor.itersize = 10_000
        cursor.execute(_STORED_AMOUNTS)
        for stored in cursor:
            row = next(raw, None)
            while row is not None and row[0] != stored[0]:
                row = next(raw, None)  # invalid or already present: not inserted
            if row is None:
                raise ImportFailed(
                    f"verification failed: stored trade id {stored[0]} has no row in the "
                    "source; nothing was imported"
                )
            comparison.row(stored[0], row[1:], stored[1:])
            compared += 1
    if compared != data.inserted:
        raise ImportFailed(
            f"verification failed: {compared} stored rows for {data.inserted} inserted; "
            "nothing was imported"
        )
    comparison.check_sums()
    verified = {
        "trades": f"{data.inserted} rows inserted; each stored amount read back within "
        "one ulp of the SQLite file's double, re-read independently; sums agree"
    }
    verified.update({column: str(amount) for column, amount in comparison.stored.items()})
    return verified


def counts(data: Trades) -> dict[str, Any]:
    return {
        "trades_read": data.read,
        "trades_valid": data.valid,
        "trades_inserted": data.inserted,
        "trades_already_present": data.present,
    }


LAYOUT = Layout("trades", detect, read, check, write, verify, counts)
