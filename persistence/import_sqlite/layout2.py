"""The second layout: the bot's trade-batching model (``onchain_trades`` and the tables beside it).

The same rules as the first layout (``convert``): every REAL is converted exactly, or within
one ulp, or the row is named as invalid; every row is built as the library's model (its
validation); all or nothing, in the driver's transaction; stored values are verified against
the file, re-read (``_verify``), before the commit. The steps: read converts every table into
a ``layout2_rows.Batching`` and checks the tables against each other (nothing is written),
check refuses invalid rows, write COPYs each table, verify compares.

What differs, because the tables reference each other and carry derived state:

- ``unlinked_shares`` of each fill is computed: its amount minus the links of executions that
  did not fail. A fill linked beyond its amount is invalid.
- Each accumulator is recomputed from its fills and links, exactly. The SQLite double, summed in
  floating point over the bot's life, must agree within that drift (one ulp of the side's total
  per fill and link); where it differs at all, the report notes both values.
- The links of an execution that did not fail must add up to its shares within the same drift;
  a difference within it is noted, a larger one is invalid.
- ``net_position`` is not kept (long minus short is derived), nor the ``symbol_locks`` leases.
- An execution's ``created_at`` (SQLite kept none) is its earliest link's, else its
  ``executed_at``, else the import's time.
- An event's JSON text becomes JSONB; text that does not parse to a JSON object is invalid.
- ``--skip-invalid`` may skip invalid events only: a fill, execution, link or accumulator cannot
  be left out without breaking the others' sums.
- The target's batching tables must be empty, or hold exactly this file's fills already (a
  re-run, which inserts nothing).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

import psycopg

from persistence.import_sqlite._layout import Layout, Run
from persistence.import_sqlite._report import ImportFailed
from persistence.import_sqlite._source import open_read_only
from persistence.import_sqlite._target import copy_rows, count
from persistence.import_sqlite._verify import Comparison
from persistence.import_sqlite.layout2_rows import TABLES, Batching
from persistence.tables import (
    ACCUMULATOR_COLUMNS,
    EVENT_COLUMNS,
    EXECUTION_COLUMNS,
    FILL_COLUMNS,
    LINK_COLUMNS,
)

__all__ = ["LAYOUT", "TABLES"]


def detect(path: Path, source: sqlite3.Connection, tables: set[str]) -> bool:
    """Whether the file holds the batching layout (its fills table), with the tables it needs."""
    if "onchain_trades" not in tables:
        return False
    missing = [t for t in TABLES[:4] if t not in tables]
    if missing:
        raise ImportFailed(
            f"{path} has onchain_trades but not {', '.join(missing)}: not the bot's "
            "trade-batching layout"
        )
    return True


# COPY columns per table, in the models' field order (tables.py), plus what only a row has;
# in the order written: a row's references come first
_COPY = {
    "onchain_trades": (*FILL_COLUMNS, "unlinked_shares"),
    "schwab_executions": EXECUTION_COLUMNS,
    "trade_execution_links": (*LINK_COLUMNS, "created_at"),
    "trade_accumulators": ACCUMULATOR_COLUMNS,
    "event_queue": EVENT_COLUMNS,
}
# the REAL columns compared, row by row, with the file re-read after the insert
_VERIFIED = {
    "onchain_trades": ("id", ("amount", "price_usdc")),
    "schwab_executions": ("id", ("price_cents",)),
    "trade_execution_links": ("trade_id, execution_id", ("contributed_shares",)),
}
# the invariants the library's functions rely on, checked on what was stored
_CONSISTENCY = (
    """SELECT f.id FROM onchain_trades f
    LEFT JOIN trade_execution_links l ON l.trade_id = f.id
        AND l.execution_id IN (SELECT id FROM schwab_executions WHERE status <> 'FAILED')
    GROUP BY f.id
    HAVING f.amount - coalesce(sum(l.contributed_shares), 0) <> f.unlinked_shares""",
    """SELECT a.symbol FROM trade_accumulators a
    WHERE a.accumulated_long <> (SELECT coalesce(sum(unlinked_shares), 0) FROM onchain_trades
            WHERE symbol = a.symbol AND direction = 'BUY')
        OR a.accumulated_short <> (SELECT coalesce(sum(unlinked_shares), 0) FROM onchain_trades
            WHERE symbol = a.symbol AND direction = 'SELL')""",
)


def read(run: Run) -> Batching:
    data = Batching(run.source, run.problems, datetime.now(UTC))
    data.convert()
    return data


def check(run: Run, data: Batching) -> None:
    """Refuse any invalid row but an event's (an event alone may be skipped)."""
    blocking = {t: n for t, n in data.invalid.items() if n and t != "event_queue"}
    if blocking or (data.invalid["event_queue"] and not run.skip_invalid):
        detail = ", ".join(f"{n} in {t}" for t, n in data.invalid.items() if n)
        hint = (
            "fix them in a copy of the file: the batching tables reference each other, so an "
            "invalid fill, execution, link or accumulator cannot be skipped without breaking "
            "the others' sums (--skip-invalid skips invalid events only)"
            if blocking
            else "fix them in a copy of the file, or run again with --skip-invalid"
        )
        raise ImportFailed(
            f"invalid rows ({detail}); nothing was imported. The report lists each row's "
            f"SQLite id, column, value and reason: {hint}"
        )


def _rows(data: Batching) -> dict[str, list[tuple[Any, ...]]]:
    """Each table's rows in ``_COPY`` order (enum members are str: COPY writes their value)."""
    fill, execution = attrgetter(*FILL_COLUMNS), attrgetter(*EXECUTION_COLUMNS)
    link, accumulator = attrgetter(*LINK_COLUMNS), attrgetter(*ACCUMULATOR_COLUMNS)
    payload = EVENT_COLUMNS.index("payload")
    return {
        "onchain_trades": [(*fill(f), data.unlinked[i]) for i, f in data.fills.items()],
        "schwab_executions": [execution(e) for e in data.executions.values()],
        "trade_execution_links": [(*link(k), created_at) for k, created_at in data.links],
        "trade_accumulators": [accumulator(a) for a in data.accumulators.values()],
        "event_queue": [
            (
                *attrgetter(*EVENT_COLUMNS[:payload])(e),
                text,
                *attrgetter(*EVENT_COLUMNS[payload + 1 :])(e),
            )
            for e, text in data.events
        ],
    }


def write(run: Run, data: Batching) -> None:
    """COPY every table, ids kept; into empty batching tables only (a re-run inserts nothing)."""
    conn = run.target
    rows = _rows(data)
    if count(conn, "onchain_trades"):
        if _already_imported(conn, rows["onchain_trades"]):
            for fill_id in data.fills:
                run.problems.note("onchain_trades", fill_id, "tx_hash", "", "already stored: kept")
            data.already_imported = True
            return
        raise ImportFailed(
            "the target already holds other trade-batching data (onchain_trades is not empty); "
            "this layout is imported into empty batching tables only; nothing was imported"
        )
    for table, columns in _COPY.items():
        copy_rows(conn, f'COPY "{table}" ({", ".join(columns)}) FROM STDIN', rows[table])
        data.inserted[table] = len(rows[table])
    for table in ("onchain_trades", "schwab_executions", "trade_execution_links", "event_queue"):
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f'GREATEST((SELECT max(id) FROM "{table}"), 1))'
        )


def _already_imported(conn: psycopg.Connection[Any], fills: list[tuple[Any, ...]]) -> bool:
    stored = dict(
        (row[0], (row[1], row[2]))
        for row in conn.execute("SELECT id, tx_hash, log_index FROM onchain_trades")
    )
    ident, tx_hash, log_index = (FILL_COLUMNS.index(c) for c in ("id", "tx_hash", "log_index"))
    return len(stored) == len(fills) and all(
        stored.get(f[ident]) == (f[tx_hash], f[log_index]) for f in fills
    )


def verify(run: Run, data: Batching) -> dict[str, str]:
    conn = run.target
    if data.already_imported:
        return {
            "onchain_trades": "already imported: every fill is stored with its id; "
            "nothing was inserted"
        }
    verified = {}
    for table, inserted in data.inserted.items():
        stored = count(conn, table)
        if stored != inserted:
            raise ImportFailed(
                f"verification failed: {table} holds {stored} rows for {inserted} inserted; "
                "nothing was imported"
            )
    with closing(open_read_only(run.path)) as source:
        for table, (key, columns) in _VERIFIED.items():
            verified[table] = _compare(conn, source, table, key, columns, data)
    for query in _CONSISTENCY:
        broken = conn.execute(query).fetchall()
        if broken:
            raise ImportFailed(
                f"verification failed: {len(broken)} row(s) break the batching invariants "
                f"(e.g. {broken[0][0]}); nothing was imported"
            )
    verified["trade_accumulators"] = (
        f"{data.inserted['trade_accumulators']} rows; each side equals what its fills have "
        "left, exactly"
    )
    # the SQLite layout has no attempts nor dead letters: every event arrives fresh (migration
    # 0004's columns at their defaults), claimable in its turn unless processed
    retried = conn.execute(
        "SELECT count(*) FROM event_queue WHERE attempts <> 0 OR last_error IS NOT NULL "
        "OR last_failed_at IS NOT NULL OR next_attempt_at IS NOT NULL OR dead_at IS NOT NULL"
    ).fetchone()
    if retried is None or retried[0]:
        raise ImportFailed(
            f"verification failed: {retried and retried[0]} event(s) arrived with failed "
            "attempts or as dead letters, which the file cannot hold; nothing was imported"
        )
    verified["event_queue"] = (
        f"{data.inserted['event_queue']} rows; payloads stored as JSONB; none failed nor dead"
    )
    return verified


def _compare(
    conn: psycopg.Connection[Any],
    source: sqlite3.Connection,
    table: str,
    key: str,
    columns: tuple[str, ...],
    data: Batching,
) -> str:
    """Every stored REAL of ``table`` against the file's double: within one ulp, sums too."""
    listed = ", ".join(columns)
    width = key.count(",") + 1
    stored = {
        tuple(row[:width]): row[width:]
        for row in conn.execute(f'SELECT {key}, {listed} FROM "{table}"')
    }
    comparison = Comparison(columns, rows=table, place="the file", sums_of=f"{table}.")
    compared = 0
    for row in source.execute(f'SELECT {key}, {listed} FROM "{table}"'):
        ident = tuple(row[:width])
        if ident not in stored:
            if table == "onchain_trades" and ident[0] not in data.fills:
                continue
            raise ImportFailed(
                f"verification failed: {table} {ident} is in the file but not stored; "
                "nothing was imported"
            )
        compared += 1
        comparison.row(ident, row[width:], stored[ident])
    if compared != len(stored):
        raise ImportFailed(
            f"verification failed: {len(stored)} {table} rows stored, {compared} found in the "
            "file; nothing was imported"
        )
    comparison.check_sums()
    shown = ", ".join(f"sum({column}) {total}" for column, total in comparison.stored.items())
    return f"{compared} rows, each within one ulp of the file's double; {shown}"


def counts(data: Batching) -> dict[str, Any]:
    return {
        "trades_read": 0,
        "trades_valid": 0,
        "trades_inserted": 0,
        "trades_already_present": 0,
        "tables": {t: (data.read[t], data.invalid[t], data.inserted[t]) for t in data.read},
    }


LAYOUT = Layout("batching", detect, read, check, write, verify, counts)
