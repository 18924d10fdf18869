"""Layout 2's read step: each batching table converted into the library's models, and the tables
checked against each other; nothing is written here. ``layout2`` holds the rules and the other
steps; this is the larger part, because the tables reference each other and carry derived
state (each fill's unlinked shares, each accumulator's sides).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import attrs

from persistence.import_sqlite._report import Problems
from persistence.import_sqlite.convert import (
    EXACT,
    ROUNDED,
    Invalid,
    to_datetime,
    to_decimal,
    to_model,
    whole,
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

__all__ = ["TABLES", "Batching"]

TABLES = (
    "onchain_trades",
    "schwab_executions",
    "trade_accumulators",
    "trade_execution_links",
    "event_queue",
)
_REQUIRED = TABLES[:4]


def _drift(count: int, total: Decimal) -> Decimal:
    """How far a double summed ``count`` times, up to ``total``, may be from the exact sum."""
    return Decimal(math.ulp(max(float(abs(total)), 1.0))) * (count + 1)


class Batching:
    """The rows of one SQLite file, converted and checked (read, check), then what was written."""

    def __init__(self, source: sqlite3.Connection, problems: Problems, started: datetime) -> None:
        self.source, self.problems, self.started = source, problems, started
        self.read: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.invalid: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.fills: dict[int, Fill] = {}
        self.executions: dict[int, Execution] = {}
        self.links: list[tuple[ExecutionLink, datetime]] = []
        self.accumulators: dict[str, Accumulator] = {}
        self.events: list[tuple[QueuedEvent, str]] = []
        self.unlinked: dict[int, Decimal] = {}
        self.inserted: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.already_imported = False

    def problem(self, table: str, row_id: Any, error: Invalid) -> None:
        self.invalid[table] += 1
        self.problems.invalid(table, row_id, error.column, repr(error.value)[:120], error.reason)

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
            self.problems.note(table, row["id"], column, repr(value), ROUNDED)
        return moment

    def convert(self) -> None:
        for step in (
            self._fills,
            self._executions,
            self._links,
            self._accumulators,
            self._events,
        ):
            step()

    def _each(self, table: str, build: Callable[[sqlite3.Row], None]) -> None:
        for row in self.rows(table):
            try:
                build(row)
            except Invalid as error:
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
        self.problem(table, first, Invalid("tx_hash", row["tx_hash"], same.format(row["id"])))
        raise Invalid("tx_hash", row["tx_hash"], same.format(first))

    def _fills(self) -> None:
        keys: dict[tuple[str, int], int] = {}

        def build(row: sqlite3.Row) -> None:
            created_at = self.time("onchain_trades", row, "created_at")
            if created_at is None:
                raise Invalid("created_at", None, "is NULL, and the column requires a value")
            fill = to_model(
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
        def build(row: sqlite3.Row) -> None:
            status = row["status"]
            executed_at = self.time("schwab_executions", row, "executed_at")
            self.executions[row["id"]] = to_model(
                Execution,
                row["id"],
                row["symbol"],
                whole("shares", row["shares"]),
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
            link = to_model(
                ExecutionLink,
                row["trade_id"],
                row["execution_id"],
                to_decimal("contributed_shares", row["contributed_shares"], AMOUNT),
            )
            if link.trade_id not in self.fills:
                raise Invalid("trade_id", link.trade_id, "is not a valid fill of this file")
            if link.execution_id not in self.executions:
                raise Invalid(
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
                linked[link.trade_id] = EXACT.add(linked[link.trade_id], link.contributed_shares)
        for fill_id, fill in self.fills.items():
            left = EXACT.subtract(fill.amount, linked[fill_id])
            if left < 0:
                reason = f"is linked beyond its amount: {linked[fill_id]} of {fill.amount}"
                self.problem("onchain_trades", fill_id, Invalid("amount", fill.amount, reason))
            self.unlinked[fill_id] = left
        for execution_id, execution in self.executions.items():
            if execution.status is ExecutionStatus.FAILED:
                continue
            parts = per_execution.get(execution_id, [])
            total = sum(parts, Decimal(0))
            if total == execution.shares:
                continue
            off = abs(EXACT.subtract(total, Decimal(execution.shares)))
            kind = "note" if off <= _drift(len(parts), Decimal(execution.shares)) else "invalid"
            reason = f"its links add up to {total}, not {execution.shares} shares" + (
                " (floating-point drift in the SQLite file; kept)" if kind == "note" else ""
            )
            if kind == "invalid":
                self.problem(
                    "schwab_executions", execution_id, Invalid("shares", execution.shares, reason)
                )
            else:
                self.problems.note("schwab_executions", execution_id, "shares", "", reason)

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
                if abs(EXACT.subtract(stored, recomputed)) > _drift(count, totals[(symbol, side)]):
                    raise Invalid(
                        column,
                        row[column],
                        f"does not match its fills and links, which leave {recomputed}",
                    )
                if stored != recomputed:
                    reason = (
                        f"recomputed from its fills and links: {recomputed} "
                        "(floating-point drift in the SQLite file)"
                    )
                    self.problems.note(
                        "trade_accumulators", symbol, column, repr(row[column]), reason
                    )
                exact[column] = recomputed
            pending_id = row["pending_execution_id"]
            if pending_id is not None and pending.get(symbol) != pending_id:
                raise Invalid(
                    "pending_execution_id",
                    pending_id,
                    f"is not the PENDING execution of {symbol} in this file",
                )
            if pending_id is None and symbol in pending:
                pending_id = pending[symbol]
                reason = f"set to {pending_id}, the symbol's PENDING execution"
                self.problems.note(
                    "trade_accumulators", symbol, "pending_execution_id", "None", reason
                )
            if pending_id is not None:
                pointed.add(pending_id)
            self.accumulators[symbol] = to_model(
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
            except Invalid as error:
                self.problem("trade_accumulators", row["symbol"], error)
        symbols = {symbol for symbol, _ in sides} | set(pending)
        for symbol in sorted(symbols - set(self.accumulators) - self._invalid_symbols()):
            long = sum(sides.get((symbol, "BUY"), []), Decimal(0))
            short = sum(sides.get((symbol, "SELL"), []), Decimal(0))
            self.accumulators[symbol] = Accumulator(
                symbol, long, short, pending.get(symbol), self.started
            )
            self.problems.note(
                "trade_accumulators", symbol, "symbol", repr(symbol), "created: it had none"
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
                raise Invalid("event_data", text, f"is not a JSON object: {exc}") from None
            processed_at = self.time("event_queue", row, "processed_at")
            if row["processed"] and processed_at is None:
                processed_at = self.started
                reason = "processed without a time: set to the import's time"
                self.problems.note("event_queue", row["id"], "processed_at", "None", reason)
            elif not row["processed"] and processed_at is not None:
                raise Invalid("processed", row["processed"], "is 0 but processed_at is set")
            event = to_model(
                QueuedEvent,
                row["id"],
                row["tx_hash"],
                row["log_index"],
                whole("block_number", row["block_number"]),
                payload,
                self.time("event_queue", row, "created_at") or self.started,
                processed_at,
            )
            self._unique("event_queue", keys, valid, row, event)
            valid[event.id] = (event, canonical)

        self._each("event_queue", build)
        self.events = list(valid.values())


# COPY columns per table, in the models' field order (tables.py), plus what only a row has
