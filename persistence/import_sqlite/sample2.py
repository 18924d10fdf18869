"""A store in the bot's second layout (trade batching), built by the bot's own algorithm on
SQLite, floats as it had them. For a newcomer trying the import without the bot
(``python -m persistence.import_sqlite --make-sample FILE --layout 2``), the tests and the
benchmarks: :data:`BATCHING_SCHEMA`, :func:`bot_record_fill`, :func:`bot_settle`,
:func:`write_batching`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from persistence.import_sqlite.sample1 import AUTH_SCHEMA

__all__ = [
    "BATCHING_SCHEMA",
    "EVENTS",
    "STEPS",
    "bot_record_fill",
    "bot_settle",
    "fill",
    "make_sample",
    "write_batching",
]

# the trade-batching model, as the bot kept it in SQLite
BATCHING_SCHEMA = (
    """
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
"""
    + AUTH_SCHEMA
)


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


def fill(
    index: int, amount: float, symbol: str = "AAPL", direction: str = "BUY"
) -> tuple[Any, ...]:
    """A step of :func:`write_batching`: the fill ``0x<index>``:0 at 150.25 USDC."""
    return ("fill", f"0x{index:064x}", 0, symbol, amount, direction, 150.25)


# a life of the bot: fractional fills whose float sums drift, executions completed and failed
STEPS = [
    fill(1, 0.1),
    fill(2, 0.2),
    fill(3, 0.7),  # 0.1 + 0.2 + 0.7 in doubles: the first execution, of one share
    ("complete", "AAPL"),
    fill(4, 0.35, direction="SELL"),
    fill(5, 0.9, direction="SELL"),  # a SELL share: split across fills 4 and 5
    ("fail", "AAPL"),  # its shares go back to fills 4 and 5
    fill(6, 1.3, symbol="MSFT"),
    fill(7, 0.45),  # AAPL's next fill: the SELL share given back starts again, same fills
    fill(8, 0.15, direction="SELL"),
]
# queued events: one processed, one not, its hash upper-cased as some writers sent it
EVENTS = [
    (
        f"0x{1:064x}",
        0,
        100,
        json.dumps({"symbol": "AAPL", "amount": "0.1"}),
        1,
        "2026-03-01 12:00:00",
    ),
    (f"0x{9:064X}", 3, 101, '{"symbol": "MSFT", "nested": {"a": [1, null]}}', 0, None),
]


def make_sample(path: Path) -> None:
    """A small second-layout store at ``path``: :data:`STEPS` and :data:`EVENTS`."""
    write_batching(path, STEPS, events=EVENTS)
