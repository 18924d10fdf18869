"""A store in the bot's first layout (``trades`` and ``schwab_auth``): money in REAL, time as
text, as the bot wrote it. For a newcomer trying the import without the bot
(``python -m persistence.import_sqlite --make-sample FILE --layout 1``), the tests and the
benchmarks: :data:`SCHEMA`, :func:`row` (a typical row), :func:`many`, :func:`write`."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from persistence.import_sqlite.layout1 import BOT_COLUMNS

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
"""
# the Schwab tokens: the same table in the first two layouts
AUTH_SCHEMA = """
CREATE TABLE IF NOT EXISTS schwab_auth (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    access_token TEXT NOT NULL,
    access_token_fetched_at DATETIME NOT NULL,
    refresh_token TEXT NOT NULL,
    refresh_token_fetched_at DATETIME NOT NULL
);
"""
SCHEMA += AUTH_SCHEMA
__all__ = ["AUTH_SCHEMA", "COLUMNS", "SCHEMA", "make_sample", "many", "row", "write"]

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


def make_sample(path: Path) -> None:
    """A small first-layout store at ``path``: 20 ordinary trades, a third of them completed."""
    write(path, many(20))
