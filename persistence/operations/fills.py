"""On-chain fills: record one (store, accumulate, start an execution when due), read, list."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from persistence.converter import execution_from_row, fill_from_row, fill_params
from persistence.errors import ValidationError
from persistence.models import Fill, Instruction, RecordedFill
from persistence.operations import ALL, Query
from persistence.operations.checks import aware, key, page
from persistence.queries import fills as sql
from persistence.validation import check_symbol


def record(fill: Fill) -> Query[RecordedFill]:
    """Record ``fill`` in one transaction.

    Stores it, adds its amount to the symbol's accumulator (long for BUY, short for SELL), and,
    if no execution is pending for the symbol and a side holds a whole share, starts an
    execution of the whole shares, linked to the fills that make it up, oldest first.

    Safe to retry: when its (tx_hash, log_index) is stored already with the same symbol, amount,
    direction and price, nothing changes and the result is what the first call returned:
    ``already_stored`` True, the stored fill's id, and the lowest-id execution linked to the
    fill, as it is now: the one the first call started when it started one, else the first the
    fill went into since, or None (see ``RecordedFill``). The same key with other values is
    another event, not a retry: Conflict, naming the fields that differ, and nothing written.
    """
    if not isinstance(fill, Fill):
        raise ValidationError(f"record takes a Fill, not {type(fill).__name__}")
    if fill.id is not None:
        raise ValidationError(
            f"id={fill.id!r}: the database assigns a fill's id; record a Fill without one"
        )
    # one statement, the database function record_fill: its own transaction outside a block
    return Query(sql.RECORD_FILL, fill_params(fill), decode=_recorded, stored=_repeated)


def _recorded(row: Any) -> RecordedFill:
    # the fill's id, already_stored, then the execution's columns (NULLs for none)
    execution = None if row[2] is None else execution_from_row(row[2:])
    return RecordedFill(row[0], execution, already_stored=row[1])


def _repeated(recorded: RecordedFill) -> bool:
    return recorded.already_stored


def _fill(row: Any) -> Fill | None:
    return None if row is None else fill_from_row(row)


def _fills(rows: Any) -> builtins.list[Fill]:
    return [fill_from_row(row) for row in rows]


def get(tx_hash: str, log_index: int) -> Query[Fill | None]:
    """The fill of that on-chain event, or None."""
    return Query(sql.SELECT_FILL_BY_KEY, key(tx_hash, log_index), decode=_fill)


def list(
    *,
    symbol: str | None = None,
    direction: Instruction | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> Query[builtins.list[Fill]]:
    """One page of fills by ascending id; pass the last id as ``after_id`` for the next.

    ``since`` is inclusive and ``until`` exclusive, both on created_at.
    """
    paging = page(limit, after_id)
    if direction is not None and direction not in ("BUY", "SELL"):
        raise ValidationError(f"direction={direction!r}: use BUY or SELL")
    if symbol is not None:
        check_symbol("symbol", symbol)
    statement, params = sql.list_fills(
        symbol=symbol,
        direction=None if direction is None else str(direction),
        since=aware("since", since),
        until=aware("until", until),
        **paging,
    )
    return Query(statement, params, fetch=ALL, decode=_fills)
