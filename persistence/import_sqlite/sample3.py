"""A small store in the bot's third layout (its event store), as the bot's sqlite-es writes it.

For a newcomer trying the import without the bot, and for the tests: :data:`SCHEMA` is the
bot's tables, :func:`add_event` and :func:`add_snapshot` write rows as the bot does, and
:func:`make_sample` writes a store with interleaved aggregates and one compacted aggregate.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "add_event", "add_snapshot", "make_sample"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    event_version TEXT NOT NULL,
    payload JSON NOT NULL,
    metadata JSON NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE INDEX IF NOT EXISTS idx_events_type ON events (aggregate_type);
CREATE INDEX IF NOT EXISTS idx_events_aggregate ON events (aggregate_id);
CREATE TABLE IF NOT EXISTS snapshots (
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    last_sequence BIGINT NOT NULL,
    payload JSON NOT NULL,
    timestamp TEXT NOT NULL,
    snapshot_version BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (aggregate_type, aggregate_id)
);
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);
"""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def add_event(
    conn: sqlite3.Connection,
    aggregate_type: str,
    aggregate_id: str,
    sequence: int,
    payload: Any,
    *,
    event_type: str | None = None,
    metadata: Any = None,
    event_version: str = "1.0",
) -> int:
    """Append one event (payload and metadata as JSON text, or values to dump); its rowid."""
    cursor = conn.execute(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            aggregate_type,
            aggregate_id,
            sequence,
            event_type or f"{aggregate_type}Event",
            event_version,
            _text(payload),
            _text({} if metadata is None else metadata),
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def add_snapshot(
    conn: sqlite3.Connection,
    aggregate_type: str,
    aggregate_id: str,
    last_sequence: int,
    payload: Any,
    *,
    timestamp: str = "2026-03-01T12:00:00.123456Z",
    snapshot_version: int = 1,
) -> None:
    conn.execute(
        "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?)",
        (aggregate_type, aggregate_id, last_sequence, _text(payload), timestamp, snapshot_version),
    )


def make_sample(path: Path) -> None:
    """A small layout-3 store at ``path``: two positions and their fills, interleaved, one
    compacted aggregate (its events start after its snapshot), exact decimal strings."""
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
        fills = [("AAPL", "0.5", "150.25"), ("TSLA", "1.25", "240.10"), ("AAPL", "0.75", "151.00")]
        for n, (symbol, amount, price) in enumerate(fills):
            trade = f"0x{n + 1:064x}:0"
            add_event(
                conn,
                "OnChainTrade",
                trade,
                1,
                {"Filled": {"symbol": symbol, "amount": amount, "price": price}},
                metadata={"correlation_id": f"c{n}"},
            )
            existing = conn.execute(
                "SELECT max(sequence) FROM events WHERE aggregate_type = 'Position' "
                "AND aggregate_id = ?",
                (symbol,),
            ).fetchone()[0]
            add_event(
                conn,
                "Position",
                symbol,
                (existing or 0) + 1,
                {"FillApplied": {"trade": trade, "amount": amount}},
            )
        add_snapshot(conn, "Position", "AAPL", 2, {"Position": {"symbol": "AAPL", "net": "1.25"}})
        # compacted: the snapshot covers sequences 1..3, deleted; the events start at 4
        add_snapshot(conn, "Inventory", "main", 3, {"Inventory": {"usdc": "1000.000000"}})
        add_event(conn, "Inventory", "main", 4, {"Deposited": {"usdc": "25.500000"}})
        conn.execute(
            "INSERT INTO _sqlx_migrations VALUES (20251101000000, 'events', "
            "'2025-11-01 00:00:00', 1, x'00', 1)"
        )
