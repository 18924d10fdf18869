"""The bot's old SQLite store, built by tests and benchmarks: money in REAL, time as text."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from persistence.import_sqlite import BOT_COLUMNS

SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_hash TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    onchain_input_symbol TEXT NOT NULL,
    onchain_input_amount REAL NOT NULL,
    onchain_output_symbol TEXT NOT NULL,
    onchain_output_amount REAL NOT NULL,
    onchain_io_ratio REAL NOT NULL,
    onchain_price_per_share_cents REAL NOT NULL,
    schwab_ticker TEXT NOT NULL,
    schwab_instruction TEXT NOT NULL CHECK (schwab_instruction IN ('BUY', 'SELL')),
    schwab_quantity INTEGER NOT NULL,
    schwab_price_per_share_cents REAL,
    status TEXT DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED')),
    schwab_order_id TEXT,
    created_at DATETIME NOT NULL DEFAULT (datetime('now')),
    completed_at DATETIME,
    UNIQUE (tx_hash, log_index)
);
CREATE INDEX IF NOT EXISTS trades_status ON trades (status);
CREATE TABLE IF NOT EXISTS schwab_auth (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    access_token TEXT NOT NULL,
    access_token_fetched_at DATETIME NOT NULL,
    refresh_token TEXT NOT NULL,
    refresh_token_fetched_at DATETIME NOT NULL
);
"""
COLUMNS = BOT_COLUMNS


def row(sqlite_id: int, **overrides: Any) -> dict[str, Any]:
    """A typical row as the bot wrote it: $150.25 for one share, as doubles."""
    values: dict[str, Any] = {
        "id": sqlite_id,
        "tx_hash": f"0x{sqlite_id:064x}",
        "log_index": 0,
        "onchain_input_symbol": "USDC",
        "onchain_input_amount": 150.25,
        "onchain_output_symbol": "tAAPL",
        "onchain_output_amount": 1.0,
        "onchain_io_ratio": 150.25,
        "onchain_price_per_share_cents": 15025.0,
        "schwab_ticker": "AAPL",
        "schwab_instruction": "SELL",
        "schwab_quantity": 1,
        "schwab_price_per_share_cents": None,
        "status": "PENDING",
        "schwab_order_id": None,
        "created_at": "2026-03-01 12:00:00",
        "completed_at": None,
    }
    values.update(overrides)
    return values


def write(path: Path, rows: Iterable[dict[str, Any]], auth: dict[str, Any] | None = None) -> Path:
    """A SQLite file in the bot's layout holding ``rows`` (and a schwab_auth row)."""
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    placeholders = ", ".join("?" for _ in COLUMNS)
    with conn:
        conn.executemany(
            f"INSERT INTO trades ({', '.join(COLUMNS)}) VALUES ({placeholders})",
            (tuple(r[c] for c in COLUMNS) for r in rows),
        )
        if auth is not None:
            conn.execute(
                "INSERT INTO schwab_auth VALUES (1, :access_token, :access_token_fetched_at, "
                ":refresh_token, :refresh_token_fetched_at)",
                auth,
            )
    conn.close()
    return path


def many(count: int) -> Iterator[dict[str, Any]]:
    """``count`` ordinary rows with varied prices, a third of them completed."""
    for index in range(1, count + 1):
        shares = float(index % 50 + 1)
        usdc = round(shares * (100 + index % 400) + 0.37, 2)
        completed = index % 3 == 0
        yield row(
            index,
            onchain_input_amount=usdc,
            onchain_output_amount=shares,
            onchain_io_ratio=usdc / shares,
            onchain_price_per_share_cents=usdc * 100 / shares,
            schwab_quantity=int(shares),
            status="COMPLETED" if completed else "PENDING",
            schwab_order_id=f"O{index}" if completed else None,
            completed_at="2026-03-01 12:00:05" if completed else None,
        )


# Layout 2, the trade-batching model, as the bot kept it in SQLite (../shared/BOT-MODEL.md).
BATCHING_SCHEMA = """
CREATE TABLE IF NOT EXISTS onchain_trades (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_hash TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    amount REAL NOT NULL CHECK (amount > 0),
    direction TEXT NOT NULL CHECK (direction IN ('BUY', 'SELL')),
    price_usdc REAL NOT NULL CHECK (price_usdc > 0),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (tx_hash, log_index)
);
CREATE TABLE IF NOT EXISTS schwab_executions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    symbol TEXT NOT NULL,
    shares INTEGER NOT NULL CHECK (shares > 0),
    direction TEXT NOT NULL CHECK (direction IN ('BUY', 'SELL')),
    order_id TEXT,
    price_cents INTEGER CHECK (price_cents >= 0),
    status TEXT NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED')),
    executed_at TIMESTAMP
);
CREATE UNIQUE INDEX IF NOT EXISTS one_pending_per_symbol
    ON schwab_executions (symbol) WHERE status = 'PENDING';
CREATE TABLE IF NOT EXISTS trade_accumulators (
    symbol TEXT PRIMARY KEY,
    net_position REAL NOT NULL DEFAULT 0,
    accumulated_long REAL NOT NULL DEFAULT 0 CHECK (accumulated_long >= 0),
    accumulated_short REAL NOT NULL DEFAULT 0 CHECK (accumulated_short >= 0),
    pending_execution_id INTEGER REFERENCES schwab_executions (id),
    last_updated TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS trade_execution_links (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    trade_id INTEGER NOT NULL REFERENCES onchain_trades (id),
    execution_id INTEGER NOT NULL REFERENCES schwab_executions (id),
    contributed_shares REAL NOT NULL CHECK (contributed_shares > 0),
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (trade_id, execution_id)
);
CREATE TABLE IF NOT EXISTS symbol_locks (
    symbol TEXT PRIMARY KEY,
    locked_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS event_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_hash TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    block_number INTEGER NOT NULL CHECK (block_number >= 0),
    event_data TEXT NOT NULL CHECK (event_data <> ''),
    processed BOOLEAN NOT NULL DEFAULT 0,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    processed_at TIMESTAMP,
    UNIQUE (tx_hash, log_index)
);
CREATE TABLE IF NOT EXISTS schwab_auth (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    access_token TEXT NOT NULL,
    access_token_fetched_at DATETIME NOT NULL,
    refresh_token TEXT NOT NULL,
    refresh_token_fetched_at DATETIME NOT NULL
);
"""


# --- the bot's batching algorithm on SQLite, in the caller's transaction (floats, as it was) ---


def bot_record_fill(conn: sqlite3.Connection, fill: tuple[Any, ...]) -> int | None:
    """Store the fill (None if stored), accumulate it, start an execution of the whole shares
    if none is pending, linked to the fills oldest first; the remainder stays accumulated."""
    symbol, amount, direction = fill[2], fill[3], fill[4]
    cursor = conn.execute(
        "INSERT OR IGNORE INTO onchain_trades "
        "(tx_hash, log_index, symbol, amount, direction, price_usdc) VALUES (?, ?, ?, ?, ?, ?)",
        fill,
    )
    if not cursor.rowcount:
        return None
    side = "accumulated_long" if direction == "BUY" else "accumulated_short"
    conn.execute("INSERT OR IGNORE INTO trade_accumulators (symbol) VALUES (?)", (symbol,))
    conn.execute(
        f"UPDATE trade_accumulators SET {side} = {side} + ?, net_position = net_position + ?, "
        "last_updated = CURRENT_TIMESTAMP WHERE symbol = ?",
        (amount, amount if direction == "BUY" else -amount, symbol),
    )
    _bot_start_due(conn, symbol)
    return cursor.lastrowid


def _bot_start_due(conn: sqlite3.Connection, symbol: str) -> None:
    long, short, pending = conn.execute(
        "SELECT accumulated_long, accumulated_short, pending_execution_id "
        "FROM trade_accumulators WHERE symbol = ?",
        (symbol,),
    ).fetchone()
    if pending is not None or max(long, short) < 1:
        return
    direction, side, shares = (
        ("BUY", "accumulated_long", int(long))
        if int(long) >= int(short)
        else ("SELL", "accumulated_short", int(short))
    )
    execution_id = conn.execute(
        "INSERT INTO schwab_executions (symbol, shares, direction) VALUES (?, ?, ?)",
        (symbol, shares, direction),
    ).lastrowid
    open_fills = conn.execute(
        "SELECT t.id, t.amount - coalesce((SELECT sum(l.contributed_shares) "
        "FROM trade_execution_links l JOIN schwab_executions e ON e.id = l.execution_id "
        "WHERE l.trade_id = t.id AND e.status <> 'FAILED'), 0) FROM onchain_trades t "
        "WHERE t.symbol = ? AND t.direction = ? ORDER BY t.id",
        (symbol, direction),
    ).fetchall()
    missing = float(shares)
    for trade_id, left in open_fills:
        if missing <= 0:
            break
        if left <= 0:
            continue
        taken = min(left, missing)
        conn.execute(
            "INSERT INTO trade_execution_links (trade_id, execution_id, contributed_shares) "
            "VALUES (?, ?, ?)",
            (trade_id, execution_id, taken),
        )
        missing -= taken
    conn.execute(
        f"UPDATE trade_accumulators SET {side} = {side} - ?, pending_execution_id = ? "
        "WHERE symbol = ?",
        (shares, execution_id, symbol),
    )


def bot_settle(conn: sqlite3.Connection, symbol: str, status: str) -> None:
    """Complete or fail the symbol's pending execution; a failure gives its shares back."""
    row = conn.execute(
        "SELECT e.id, e.shares, e.direction FROM trade_accumulators a "
        "JOIN schwab_executions e ON e.id = a.pending_execution_id WHERE a.symbol = ?",
        (symbol,),
    ).fetchone()
    if row is None:
        return
    execution_id, shares, direction = row
    if status == "COMPLETED":
        conn.execute(
            "UPDATE schwab_executions SET status = 'COMPLETED', order_id = 'X', "
            "price_cents = 15025, executed_at = CURRENT_TIMESTAMP WHERE id = ?",
            (execution_id,),
        )
        given_back = 0
    else:
        conn.execute(
            "UPDATE schwab_executions SET status = 'FAILED', executed_at = CURRENT_TIMESTAMP "
            "WHERE id = ?",
            (execution_id,),
        )
        given_back = shares
    side = "accumulated_long" if direction == "BUY" else "accumulated_short"
    conn.execute(
        f"UPDATE trade_accumulators SET {side} = {side} + ?, pending_execution_id = NULL "
        "WHERE symbol = ?",
        (given_back, symbol),
    )


def write_batching(
    path: Path,
    steps: Iterable[tuple[Any, ...]],
    *,
    events: Iterable[tuple[Any, ...]] = (),
    auth: dict[str, Any] | None = None,
) -> Path:
    """A SQLite file in the bot's batching layout, built by the bot's own algorithm.

    Steps: ``("fill", tx_hash, log_index, symbol, amount, direction, price)``,
    ``("complete", symbol)``, ``("fail", symbol)``. Events: ``(tx_hash, log_index,
    block_number, event_data, processed, processed_at)``.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(BATCHING_SCHEMA)
    conn.execute("BEGIN")
    for step in steps:
        if step[0] == "fill":
            bot_record_fill(conn, step[1:])
        else:
            bot_settle(conn, step[1], "COMPLETED" if step[0] == "complete" else "FAILED")
    conn.executemany(
        "INSERT INTO event_queue (tx_hash, log_index, block_number, event_data, processed, "
        "processed_at) VALUES (?, ?, ?, ?, ?, ?)",
        events,
    )
    if auth is not None:
        conn.execute(
            "INSERT INTO schwab_auth VALUES (1, :access_token, :access_token_fetched_at, "
            ":refresh_token, :refresh_token_fetched_at)",
            auth,
        )
    conn.execute("COMMIT")
    conn.close()
    return path
