"""The import of the bot's second SQLite layout: the trade-batching model.

The same rules as the first layout (``persistence.import_sqlite``): every REAL is converted
exactly, or within one ulp, or the row is named as invalid; every row is built as the library's
model (its validation); all or nothing, in the caller's transaction; stored values are verified
against the file, re-read, before the commit.

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

import json
import math
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Context, Decimal
from operator import attrgetter
from pathlib import Path
from typing import Any

import attrs
import psycopg

from persistence.errors import ValidationError
from persistence.import_sqlite.convert import (
    ImportFailed,
    _read_only,
    _RowError,
    _validation_column,
    to_datetime,
    to_decimal,
)
from persistence.models import (
    AMOUNT,
    PRICE_CENTS,
    Accumulator,
    Execution,
    ExecutionLink,
    ExecutionStatus,
    Fill,
    QueuedEvent,
)
from persistence.tables import (
    ACCUMULATOR_COLUMNS,
    EVENT_COLUMNS,
    EXECUTION_COLUMNS,
    FILL_COLUMNS,
    LINK_COLUMNS,
)

__all__ = ["TABLES", "import_batching", "is_batching"]

TABLES = (
    "onchain_trades",
    "schwab_executions",
    "trade_accumulators",
    "trade_execution_links",
    "event_queue",
)
_REQUIRED = TABLES[:4]
_EXACT = Context(prec=200)
Note = Callable[[str, Any, str, str, Any, str], None]  # table, id, column, value, reason, kind


def is_batching(table_names: Iterable[str]) -> bool:
    """Whether a SQLite file holds the batching layout (its fills table)."""
    return "onchain_trades" in set(table_names)


class _Invalid(Exception):
    def __init__(self, column: str, value: Any, reason: str) -> None:
        self.column, self.value, self.reason = column, value, reason


def _build(model: Any, *args: Any, **fields: Any) -> Any:
    """The model, or _Invalid naming the column its validation refused."""
    try:
        return model(*args, **fields)
    except ValidationError as error:
        raise _Invalid(_validation_column(error, "row"), None, str(error)) from None


def _whole(column: str, value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if type(value) is not int:
        raise _Invalid(column, value, "must be a whole number")
    return value


def _drift(count: int, total: Decimal) -> Decimal:
    """How far a double summed ``count`` times, up to ``total``, may be from the exact sum."""
    return Decimal(math.ulp(max(float(abs(total)), 1.0))) * (count + 1)


class _Batching:
    """The rows of one SQLite file, converted and checked; nothing is written here."""

    def __init__(self, source: sqlite3.Connection, note: Note, started: datetime) -> None:
        self.source, self.note, self.started = source, note, started
        self.read: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.invalid: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.fills: dict[int, Fill] = {}
        self.executions: dict[int, Execution] = {}
        self.links: list[tuple[ExecutionLink, datetime]] = []
        self.accumulators: dict[str, Accumulator] = {}
        self.events: list[tuple[QueuedEvent, str]] = []
        self.unlinked: dict[int, Decimal] = {}

    def problem(self, table: str, row_id: Any, error: _Invalid) -> None:
        self.invalid[table] += 1
        shown = repr(error.value)
        self.note(table, row_id, error.column, shown[:120], error.reason, "invalid")

    def rows(self, table: str) -> list[sqlite3.Row]:
        try:
            rows = self.source.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()
        except sqlite3.OperationalError:
            if table in _REQUIRED:
                raise
            return []  # a file from before the bot queued events
        self.read[table] = len(rows)
        return rows

    def time(self, table: str, row: sqlite3.Row, column: str) -> datetime | None:
        value = row[column] if column in row.keys() else None  # noqa: SIM118 - a Row
        moment, rounded = to_datetime(column, value)
        if rounded:
            self.note(
                table,
                row["id"],
                column,
                repr(value),
                "rounded to the microsecond (PostgreSQL keeps microseconds)",
                "note",
            )
        return moment

    def convert(self) -> None:
        for step in (
            self._fills,
            self._executions,
            self._links,
            self._accumulators,
            self._events,
        ):
            try:
                step()
            except _RowError as error:  # raised by the shared converters outside a row loop
                raise _Invalid(error.column, error.value, error.reason) from None

    def _each(self, table: str, build: Callable[[sqlite3.Row], None]) -> None:
        for row in self.rows(table):
            try:
                build(row)
            except _RowError as error:
                self.problem(table, row["id"], _Invalid(error.column, error.value, error.reason))
            except _Invalid as error:
                if error.value is None and error.column in row.keys():  # noqa: SIM118
                    error.value = row[error.column]
                self.problem(table, row["id"], error)

    def _unique(
        self, table: str, keys: dict[tuple[str, int], int], kept: dict[int, Any], row: Any, new: Any
    ) -> None:
        """Two rows whose key is the same once hex is lower-cased: both are invalid, named."""
        key = (new.tx_hash, new.log_index)
        first = keys.setdefault(key, new.id)
        if first == new.id:
            return
        kept.pop(first, None)
        same = "has the (tx_hash, log_index) of row {} once hex is lower-cased"
        self.problem(table, first, _Invalid("tx_hash", row["tx_hash"], same.format(row["id"])))
        raise _Invalid("tx_hash", row["tx_hash"], same.format(first))

    def _fills(self) -> None:
        keys: dict[tuple[str, int], int] = {}

        def build(row: sqlite3.Row) -> None:
            created_at = self.time("onchain_trades", row, "created_at")
            if created_at is None:
                raise _Invalid("created_at", None, "is NULL, and the column requires a value")
            fill = _build(
                Fill,
                row["tx_hash"],
                row["log_index"],
                row["symbol"],
                to_decimal("amount", row["amount"], AMOUNT),
                row["direction"],
                to_decimal("price_usdc", row["price_usdc"], AMOUNT),
                id=row["id"],
                created_at=created_at,
            )
            self._unique("onchain_trades", keys, self.fills, row, fill)
            self.fills[fill.id] = fill

        self._each("onchain_trades", build)

    def _executions(self) -> None:
        self._execution_rows: dict[int, sqlite3.Row] = {}

        def build(row: sqlite3.Row) -> None:
            self._execution_rows[row["id"]] = row
            status = row["status"]
            executed_at = self.time("schwab_executions", row, "executed_at")
            self.executions[row["id"]] = _build(
                Execution,
                row["id"],
                row["symbol"],
                _whole("shares", row["shares"]),
                row["direction"],
                status,
                row["order_id"],
                to_decimal("price_cents", row["price_cents"], PRICE_CENTS),
                executed_at,
                executed_at or self.started,  # replaced by the earliest link's time below
            )

        self._each("schwab_executions", build)

    def _links(self) -> None:
        earliest: dict[int, datetime] = {}

        def build(row: sqlite3.Row) -> None:
            link = _build(
                ExecutionLink,
                row["trade_id"],
                row["execution_id"],
                to_decimal("contributed_shares", row["contributed_shares"], AMOUNT),
            )
            if link.trade_id not in self.fills:
                raise _Invalid("trade_id", link.trade_id, "is not a valid fill of this file")
            if link.execution_id not in self.executions:
                raise _Invalid(
                    "execution_id", link.execution_id, "is not a valid execution of this file"
                )
            created_at = self.time("trade_execution_links", row, "created_at") or self.started
            earliest[link.execution_id] = min(
                earliest.get(link.execution_id, created_at), created_at
            )
            self.links.append((link, created_at))

        self._each("trade_execution_links", build)
        for execution_id, moment in earliest.items():  # the execution was made with its links
            self.executions[execution_id] = attrs.evolve(
                self.executions[execution_id], created_at=moment
            )
        self._check_links()

    def _check_links(self) -> None:
        linked: dict[int, Decimal] = defaultdict(Decimal)
        per_execution: dict[int, list[Decimal]] = defaultdict(list)
        for link, _ in self.links:
            execution = self.executions[link.execution_id]
            per_execution[link.execution_id].append(link.contributed_shares)
            if execution.status is not ExecutionStatus.FAILED:
                linked[link.trade_id] = _EXACT.add(linked[link.trade_id], link.contributed_shares)
        for fill_id, fill in self.fills.items():
            left = _EXACT.subtract(fill.amount, linked[fill_id])
            if left < 0:
                reason = f"is linked beyond its amount: {linked[fill_id]} of {fill.amount}"
                self.problem("onchain_trades", fill_id, _Invalid("amount", fill.amount, reason))
            self.unlinked[fill_id] = left
        for execution_id, execution in self.executions.items():
            if execution.status is ExecutionStatus.FAILED:
                continue
            parts = per_execution.get(execution_id, [])
            total = sum(parts, Decimal(0))
            if total == execution.shares:
                continue
            off = abs(_EXACT.subtract(total, Decimal(execution.shares)))
            kind = "note" if off <= _drift(len(parts), Decimal(execution.shares)) else "invalid"
            reason = f"its links add up to {total}, not {execution.shares} shares" + (
                " (floating-point drift in the SQLite file; kept)" if kind == "note" else ""
            )
            if kind == "invalid":
                self.problem(
                    "schwab_executions", execution_id, _Invalid("shares", execution.shares, reason)
                )
            else:
                self.note("schwab_executions", execution_id, "shares", "", reason, "note")

    def _accumulators(self) -> None:
        sides: dict[tuple[str, str], list[Decimal]] = defaultdict(list)
        totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for fill_id, fill in self.fills.items():
            sides[(fill.symbol, fill.direction.value)].append(self.unlinked[fill_id])
            totals[(fill.symbol, fill.direction.value)] += fill.amount
        pending = {
            e.symbol: e.id for e in self.executions.values() if e.status is ExecutionStatus.PENDING
        }
        pointed: set[int] = set()

        def build(row: sqlite3.Row) -> None:
            symbol = row["symbol"]
            exact = {}
            for column, side in (("accumulated_long", "BUY"), ("accumulated_short", "SELL")):
                stored = to_decimal(column, row[column], AMOUNT) or Decimal(0)
                recomputed = sum(sides.get((symbol, side), []), Decimal(0))
                count = len(sides.get((symbol, side), [])) + len(self.links)
                if abs(_EXACT.subtract(stored, recomputed)) > _drift(count, totals[(symbol, side)]):
                    raise _Invalid(
                        column,
                        row[column],
                        f"does not match its fills and links, which leave {recomputed}",
                    )
                if stored != recomputed:
                    self.note(
                        "trade_accumulators",
                        symbol,
                        column,
                        repr(row[column]),
                        f"recomputed from its fills and links: {recomputed} "
                        "(floating-point drift in the SQLite file)",
                        "note",
                    )
                exact[column] = recomputed
            pending_id = row["pending_execution_id"]
            if pending_id is not None and pending.get(symbol) != pending_id:
                raise _Invalid(
                    "pending_execution_id",
                    pending_id,
                    f"is not the PENDING execution of {symbol} in this file",
                )
            if pending_id is None and symbol in pending:
                pending_id = pending[symbol]
                self.note(
                    "trade_accumulators",
                    symbol,
                    "pending_execution_id",
                    "None",
                    f"set to {pending_id}, the symbol's PENDING execution",
                    "note",
                )
            if pending_id is not None:
                pointed.add(pending_id)
            self.accumulators[symbol] = _build(
                Accumulator,
                symbol,
                exact["accumulated_long"],
                exact["accumulated_short"],
                pending_id,
                self.time("trade_accumulators", row, "last_updated") or self.started,
            )

        for row in self.rows("trade_accumulators"):
            try:
                build(row)
            except _Invalid as error:
                self.problem("trade_accumulators", row["symbol"], error)
        symbols = {symbol for symbol, _ in sides} | set(pending)
        for symbol in sorted(symbols - set(self.accumulators) - self._invalid_symbols()):
            long = sum(sides.get((symbol, "BUY"), []), Decimal(0))
            short = sum(sides.get((symbol, "SELL"), []), Decimal(0))
            self.accumulators[symbol] = Accumulator(
                symbol, long, short, pending.get(symbol), self.started
            )
            self.note(
                "trade_accumulators", symbol, "symbol", repr(symbol), "created: it had none", "note"
            )

    def _invalid_symbols(self) -> set[str]:
        return (
            set()
            if not self.invalid["trade_accumulators"]
            else {row["symbol"] for row in self.rows("trade_accumulators")}
        )

    def _events(self) -> None:
        keys: dict[tuple[str, int], int] = {}
        valid: dict[int, tuple[QueuedEvent, str]] = {}

        def build(row: sqlite3.Row) -> None:
            text = row["event_data"]
            try:
                payload = json.loads(text)
                if not isinstance(payload, dict):
                    raise ValueError("not a JSON object")
                # NaN and Infinity parse in Python but are not JSON: PostgreSQL refuses them
                canonical = json.dumps(payload, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise _Invalid("event_data", text, f"is not a JSON object: {exc}") from None
            processed_at = self.time("event_queue", row, "processed_at")
            if row["processed"] and processed_at is None:
                processed_at = self.started
                self.note(
                    "event_queue",
                    row["id"],
                    "processed_at",
                    "None",
                    "processed without a time: set to the import's time",
                    "note",
                )
            elif not row["processed"] and processed_at is not None:
                raise _Invalid("processed", row["processed"], "is 0 but processed_at is set")
            event = _build(
                QueuedEvent,
                row["id"],
                row["tx_hash"],
                row["log_index"],
                _whole("block_number", row["block_number"]),
                payload,
                self.time("event_queue", row, "created_at") or self.started,
                processed_at,
            )
            self._unique("event_queue", keys, valid, row, event)
            valid[event.id] = (event, canonical)

        self._each("event_queue", build)
        self.events = list(valid.values())


# --- writing and verifying -------------------------------------------------------------------

# COPY columns per table, in the models' field order (tables.py), plus what only a row has
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


def _rows(data: _Batching) -> dict[str, list[tuple[Any, ...]]]:
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


def import_batching(
    conn: psycopg.Connection[Any],
    source: sqlite3.Connection,
    source_path: Path,
    note: Note,
    *,
    skip_invalid: bool,
) -> tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, str]]:
    """Convert, check, insert and verify the batching tables, in ``conn``'s transaction.

    Returns rows read, invalid and inserted per table, and what was verified. Raises
    ImportFailed (nothing is written: the caller rolls back).
    """
    data = _Batching(source, note, datetime.now(UTC))
    data.convert()
    blocking = {t: n for t, n in data.invalid.items() if n and t != "event_queue"}
    if blocking or (data.invalid["event_queue"] and not skip_invalid):
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
    rows = _rows(data)
    stored = conn.execute("SELECT count(*) FROM onchain_trades").fetchone()
    inserted = dict.fromkeys(TABLES, 0)
    if stored and stored[0]:
        if _already_imported(conn, rows["onchain_trades"]):
            for fill_id in data.fills:
                note("onchain_trades", fill_id, "tx_hash", "", "already stored: kept", "note")
            return (
                data.read,
                data.invalid,
                inserted,
                {
                    "onchain_trades": "already imported: every fill is stored with its id; "
                    "nothing was inserted"
                },
            )
        raise ImportFailed(
            "the target already holds other trade-batching data (onchain_trades is not empty); "
            "this layout is imported into empty batching tables only; nothing was imported"
        )
    for table in (
        "onchain_trades",
        "schwab_executions",
        "trade_execution_links",
        "trade_accumulators",
        "event_queue",
    ):
        columns = _COPY[table]
        with (
            conn.cursor() as cursor,
            cursor.copy(f'COPY "{table}" ({", ".join(columns)}) FROM STDIN') as copy,
        ):
            for row in rows[table]:
                copy.write_row(row)
        inserted[table] = len(rows[table])
    for table in ("onchain_trades", "schwab_executions", "trade_execution_links", "event_queue"):
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f'GREATEST((SELECT max(id) FROM "{table}"), 1))'
        )
    verified = _verify(conn, source_path, data, inserted)
    return data.read, data.invalid, inserted, verified


def _already_imported(conn: psycopg.Connection[Any], fills: list[tuple[Any, ...]]) -> bool:
    stored = dict(
        (row[0], (row[1], row[2]))
        for row in conn.execute("SELECT id, tx_hash, log_index FROM onchain_trades")
    )
    ident, tx_hash, log_index = (FILL_COLUMNS.index(c) for c in ("id", "tx_hash", "log_index"))
    return len(stored) == len(fills) and all(
        stored.get(f[ident]) == (f[tx_hash], f[log_index]) for f in fills
    )


def _verify(
    conn: psycopg.Connection[Any], source_path: Path, data: _Batching, inserted: dict[str, int]
) -> dict[str, str]:
    verified = {}
    for table, count in inserted.items():
        row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        if row is None or row[0] != count:
            raise ImportFailed(
                f"verification failed: {table} holds {row and row[0]} rows for {count} inserted; "
                "nothing was imported"
            )
    source = _read_only(source_path)
    try:
        for table, (key, columns) in _VERIFIED.items():
            verified[table] = _compare(conn, source, table, key, columns, data)
    finally:
        source.close()
    for check in _CONSISTENCY:
        broken = conn.execute(check).fetchall()
        if broken:
            raise ImportFailed(
                f"verification failed: {len(broken)} row(s) break the batching invariants "
                f"(e.g. {broken[0][0]}); nothing was imported"
            )
    verified["trade_accumulators"] = (
        f"{inserted['trade_accumulators']} rows; each side equals what its fills have left, exactly"
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
        f"{inserted['event_queue']} rows; payloads stored as JSONB; none failed nor dead"
    )
    return verified


def _compare(
    conn: psycopg.Connection[Any],
    source: sqlite3.Connection,
    table: str,
    key: str,
    columns: tuple[str, ...],
    data: _Batching,
) -> str:
    """Every stored REAL of ``table`` against the file's double: within one ulp, sums too."""
    listed = ", ".join(columns)
    stored = {
        tuple(row[: key.count(",") + 1]): row[key.count(",") + 1 :]
        for row in conn.execute(f'SELECT {key}, {listed} FROM "{table}"')
    }
    sums = dict.fromkeys(columns, (Decimal(0), Decimal(0), 0.0))  # stored, source, slack
    compared = 0
    for row in source.execute(f'SELECT {key}, {listed} FROM "{table}"'):
        width = key.count(",") + 1
        ident = tuple(row[:width])
        if ident not in stored:
            if table == "onchain_trades" and ident[0] not in data.fills:
                continue
            raise ImportFailed(
                f"verification failed: {table} {ident} is in the file but not stored; "
                "nothing was imported"
            )
        compared += 1
        for column, value, amount in zip(columns, row[width:], stored[ident], strict=True):
            if value is None and amount is None:
                continue
            if value is None or amount is None:
                raise _mismatch(table, ident, column, value, amount)
            exact = Decimal(value)
            ulp = math.ulp(value) if isinstance(value, float) else 0.0
            if abs(_EXACT.subtract(amount, exact)) > Decimal(ulp):
                raise _mismatch(table, ident, column, value, amount)
            total, source_total, slack = sums[column]
            sums[column] = (
                _EXACT.add(total, amount),
                _EXACT.add(source_total, exact),
                slack + ulp,
            )
    if compared != len(stored):
        raise ImportFailed(
            f"verification failed: {len(stored)} {table} rows stored, {compared} found in the "
            "file; nothing was imported"
        )
    for column, (total, source_total, slack) in sums.items():
        if abs(_EXACT.subtract(total, source_total)) > Decimal(slack * 1.01):
            raise ImportFailed(
                f"verification failed: the sum of {table}.{column} is {total} in PostgreSQL "
                f"and {source_total} in the file; nothing was imported"
            )
    shown = ", ".join(f"sum({column}) {total}" for column, (total, _, _) in sums.items())
    return f"{compared} rows, each within one ulp of the file's double; {shown}"


def _mismatch(table: str, ident: Any, column: str, value: Any, amount: Any) -> Exception:
    return ImportFailed(
        f"verification failed: {table} {ident} {column} is {value!r} in the file and {amount} "
        "in PostgreSQL, more than the double's resolution apart; nothing was imported"
    )
