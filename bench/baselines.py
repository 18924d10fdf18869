"""What users would pick instead: plain psycopg, SQLAlchemy Core, and the bot's old SQLite store."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from persistence import Trade
from persistence.import_sqlite.sample1 import SCHEMA
from persistence.import_sqlite.sample2 import BATCHING_SCHEMA, bot_record_fill, bot_settle
from persistence.tables import TRADE_COLUMNS

SQLITE_COLUMNS = tuple(c for c in TRADE_COLUMNS if c != "id")
SQLITE_INSERT = (
    f"INSERT OR IGNORE INTO trades ({', '.join(SQLITE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in SQLITE_COLUMNS)})"
)
SQLITE_GET = "SELECT * FROM trades WHERE tx_hash = ? AND log_index = ?"
SQLITE_PENDING = "SELECT * FROM trades WHERE status = 'PENDING' ORDER BY id"


def sqlite_connect(path: Path) -> sqlite3.Connection:
    """The bot's old store: WAL, synchronous=FULL (every commit reaches the disk)."""
    conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    return conn


def _sqlite_time(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")


def sqlite_row(trade: Trade) -> tuple[Any, ...]:
    """A trade as the bot stored it: floats and text timestamps."""
    values = []
    for column in SQLITE_COLUMNS:
        value = getattr(trade, column)
        if column.endswith(("_amount", "_ratio", "_cents")) and value is not None:
            value = float(value)
        elif column.endswith("_at"):
            value = _sqlite_time(value) or _sqlite_time(datetime.now())
        elif hasattr(value, "value"):
            value = value.value
        values.append(value)
    return tuple(values)


metadata = sa.MetaData()
TRADES = sa.Table(
    "trades",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("tx_hash", sa.Text, nullable=False),
    sa.Column("log_index", sa.Integer, nullable=False),
    sa.Column("onchain_input_symbol", sa.Text, nullable=False),
    sa.Column("onchain_input_amount", sa.Numeric(38, 18), nullable=False),
    sa.Column("onchain_output_symbol", sa.Text, nullable=False),
    sa.Column("onchain_output_amount", sa.Numeric(38, 18), nullable=False),
    sa.Column("onchain_io_ratio", sa.Numeric(60, 30), nullable=False),
    sa.Column("onchain_price_per_share_cents", sa.Numeric(30, 18), nullable=False),
    sa.Column("schwab_ticker", sa.Text, nullable=False),
    sa.Column("schwab_instruction", sa.Text, nullable=False),
    sa.Column("schwab_quantity", sa.Integer, nullable=False),
    sa.Column("schwab_price_per_share_cents", sa.Numeric(30, 18)),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("schwab_order_id", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("completed_at", sa.DateTime(timezone=True)),
)
SA_INSERT_ONE = (
    postgresql.insert(TRADES)
    .on_conflict_do_nothing(index_elements=["tx_hash", "log_index"])
    .returning(TRADES.c.id)
)
SA_INSERT_MANY = postgresql.insert(TRADES).on_conflict_do_nothing(
    index_elements=["tx_hash", "log_index"]
)
SA_GET = sa.select(TRADES).where(
    TRADES.c.tx_hash == sa.bindparam("tx_hash"), TRADES.c.log_index == sa.bindparam("log_index")
)
SA_PENDING = sa.select(TRADES).where(TRADES.c.status == "PENDING").order_by(TRADES.c.id)


def sa_params(trade: Trade, now: datetime) -> dict[str, Any]:
    """A trade as a SQLAlchemy parameter dict, the way a Core user writes it."""
    row = {c: getattr(trade, c) for c in TRADE_COLUMNS if c != "id"}
    row["schwab_instruction"] = trade.schwab_instruction.value
    row["status"] = trade.status.value
    row["created_at"] = trade.created_at or now
    return row


def sa_engine(conninfo: str) -> sa.Engine:
    import psycopg

    return sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo),
        pool_size=8,
        max_overflow=0,
    )


# --- the trade-batching model on SQLite, with the bot's lease scheme ------------------------

LEASE_SECONDS = 300  # the bot's 5-minute expiry
BUSY_TIMEOUT_MS = 5_000


def sqlite_batching_connect(path: Path) -> sqlite3.Connection:
    """The bot's layout-2 store: WAL, synchronous=FULL, a busy timeout; autocommit, so that
    each ``with conn`` below is one explicit transaction."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(BATCHING_SCHEMA)
    return conn


def _take_lease(conn: sqlite3.Connection, symbol: str) -> None:
    """Delete expired leases, then INSERT OR IGNORE ours; spin until it lands."""
    while True:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "DELETE FROM symbol_locks WHERE locked_at < datetime('now', ?)",
            (f"-{LEASE_SECONDS} seconds",),
        )
        taken = conn.execute(
            "INSERT OR IGNORE INTO symbol_locks (symbol, locked_at) VALUES (?, datetime('now'))",
            (symbol,),
        ).rowcount
        conn.execute("COMMIT")
        if taken:
            return
        time.sleep(0.001)


def sqlite_record_fill(conn: sqlite3.Connection, fill: tuple[Any, ...]) -> int | None:
    """The bot's record_fill under its lease: lease the symbol, then in one transaction store
    the fill, accumulate and start an execution when due (``import_sqlite.sample2``), release.

    Returns the fill's id, or None for "already stored". As in the bot, a "database is locked"
    error is taken for "already stored": that is how a fill was lost.
    """
    symbol = fill[2]
    try:
        _take_lease(conn, symbol)
    except sqlite3.OperationalError:
        return None
    try:
        conn.execute("BEGIN IMMEDIATE")
        trade_id = bot_record_fill(conn, fill)
        conn.execute("COMMIT")
        return trade_id
    except sqlite3.OperationalError:
        conn.execute("ROLLBACK")
        return None  # the bot's bug: "database is locked" read as "already stored"
    finally:
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute("DELETE FROM symbol_locks WHERE symbol = ?", (symbol,))


def sqlite_complete_pending(conn: sqlite3.Connection, symbol: str) -> None:
    """Complete the symbol's pending execution under the lease, freeing its slot."""
    _take_lease(conn, symbol)
    try:
        conn.execute("BEGIN IMMEDIATE")
        bot_settle(conn, symbol, "COMPLETED")
        conn.execute("COMMIT")
    finally:
        conn.execute("DELETE FROM symbol_locks WHERE symbol = ?", (symbol,))
