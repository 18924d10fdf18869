"""A small store in the bot's third layout (its event store), as the bot's sqlite-es writes it.

For a newcomer trying the import without the bot, and for the tests: :data:`SCHEMA` is the
bot's event tables, :data:`READ_MODELS` the tables beside them (views with generated columns,
the PnL ledger and its checkpoint, operational records, telemetry samples), :func:`add_event`
and :func:`add_snapshot` write rows as the bot does, and :func:`make_sample` writes a store with
interleaved aggregates, one compacted aggregate, and a row or more in every other table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["READ_MODELS", "SCHEMA", "add_event", "add_many", "add_snapshot", "make_sample"]

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
# the tables beside the events, shaped as the bot's (docs/migrating-from-sqlite.md)
READ_MODELS = """
CREATE TABLE IF NOT EXISTS position_view (
    view_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    payload JSON NOT NULL,
    symbol TEXT GENERATED ALWAYS AS (json_extract(payload, '$.Live.symbol')) STORED,
    net TEXT GENERATED ALWAYS AS (json_extract(payload, '$.Live.net')) VIRTUAL
);
CREATE INDEX IF NOT EXISTS idx_position_view_symbol
    ON position_view (symbol) WHERE symbol IS NOT NULL;
CREATE TABLE IF NOT EXISTS pnl_onchain_fill (
    event_rowid INTEGER PRIMARY KEY,
    symbol TEXT NOT NULL,
    tx_hash TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    shares TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('Buy', 'Sell')),
    price_usd TEXT NOT NULL,
    executed_at TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS idx_pnl_onchain_fill_symbol ON pnl_onchain_fill (symbol);
CREATE TABLE IF NOT EXISTS pnl_ledger_checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_rowid INTEGER NOT NULL,
    ledger_version INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS skipped_fills (
    tx_hash TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    skipped_at TEXT NOT NULL,
    PRIMARY KEY (tx_hash, log_index)
);
CREATE TABLE IF NOT EXISTS backfill_checkpoints (
    chain TEXT NOT NULL DEFAULT 'base',
    orderbook TEXT NOT NULL,
    last_processed_block INTEGER NOT NULL CHECK (last_processed_block >= 0),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (chain, orderbook)
);
CREATE TABLE IF NOT EXISTS block_lag_samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sampled_at TEXT NOT NULL,
    orderbook TEXT NOT NULL,
    chain_tip INTEGER NOT NULL CHECK (chain_tip >= 0),
    lag_blocks INTEGER CHECK (lag_blocks >= 0)
);
CREATE INDEX IF NOT EXISTS idx_block_lag_samples_sampled_at ON block_lag_samples (sampled_at);
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


def add_many(conn: sqlite3.Connection, count: int, *, aggregates: int = 1000) -> None:
    """Append ``count`` events round-robin over ``aggregates`` positions (rowids interleave
    them), each payload with exact decimal strings, as one multi-row transaction of the bot's."""

    def rows() -> Iterator[tuple[Any, ...]]:
        for n in range(count):
            symbol = f"S{n % aggregates:05d}"
            payload = f'{{"FillApplied": {{"amount": "{n % 97}.{n % 1000:03d}", "n": {n}}}}}'
            yield ("Position", symbol, n // aggregates + 1, "FillApplied", "1.0", payload, "{}")

    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows())


def make_sample(path: Path) -> None:
    """A small layout-3 store at ``path``: two positions and their fills, interleaved, one
    compacted aggregate (its events start after its snapshot), exact decimal strings, and the
    read models beside them (:func:`_add_read_models`)."""
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA + READ_MODELS)
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
            rowid = add_event(
                conn,
                "Position",
                symbol,
                (existing or 0) + 1,
                {"FillApplied": {"trade": trade, "amount": amount}},
            )
            conn.execute(
                "INSERT INTO pnl_onchain_fill VALUES (?, ?, ?, 0, ?, 'Buy', ?, ?)",
                (rowid, symbol, trade[:66], amount, price, f"2026-03-01T12:00:0{n}.5Z"),
            )
        add_snapshot(conn, "Position", "AAPL", 2, {"Position": {"symbol": "AAPL", "net": "1.25"}})
        # compacted: the snapshot covers sequences 1..3, deleted; the events start at 4
        add_snapshot(conn, "Inventory", "main", 3, {"Inventory": {"usdc": "1000.000000"}})
        add_event(conn, "Inventory", "main", 4, {"Deposited": {"usdc": "25.500000"}})
        conn.execute(
            "INSERT INTO _sqlx_migrations VALUES (20251101000000, 'events', "
            "'2025-11-01 00:00:00', 1, x'00', 1)"
        )
        _add_read_models(conn)


def _add_read_models(conn: sqlite3.Connection) -> None:
    """The views of the two positions, the ledger's checkpoint at the last fill's event, an
    operational record of each kind, and two telemetry samples."""
    for symbol, version, net in (("AAPL", 2, "1.25"), ("TSLA", 1, "1.25")):
        conn.execute(
            "INSERT INTO position_view (view_id, version, payload) VALUES (?, ?, ?)",
            (symbol, version, json.dumps({"Live": {"symbol": symbol, "net": net}})),
        )
    last = conn.execute("SELECT max(event_rowid) FROM pnl_onchain_fill").fetchone()[0]
    conn.execute("INSERT INTO pnl_ledger_checkpoint VALUES (1, ?, 2)", (last,))
    conn.execute(
        "INSERT INTO skipped_fills VALUES (?, 3, 'TakeOrderV3', 'unpriceable', "
        "'price -1.50 USDC/share', '2026-03-01T12:00:09.000Z')",
        ("0x" + "ee" * 32,),
    )
    conn.execute(
        "INSERT INTO backfill_checkpoints VALUES ('base', ?, 31000000, '2026-03-01T12:00:10.000Z')",
        ("0x" + "0b" * 20,),
    )
    conn.executemany(
        "INSERT INTO block_lag_samples (sampled_at, orderbook, chain_tip, lag_blocks) "
        "VALUES (?, ?, ?, ?)",
        [
            ("2026-03-01T12:00:11.000Z", "0x" + "0b" * 20, 31000004, 4),
            ("2026-03-01T12:00:12.000Z", "0x" + "0b" * 20, 31000005, None),
        ],
    )
