"""Per-symbol accumulators: the fractional shares waiting to be hedged."""

from __future__ import annotations

import builtins
from typing import Any

from persistence.converter import accumulator_from_row
from persistence.models import Accumulator
from persistence.operations import ALL, Query
from persistence.queries import accumulators as sql
from persistence.validation import check_symbol


def _accumulator(row: Any) -> Accumulator | None:
    return None if row is None else accumulator_from_row(row)


def _accumulators(rows: Any) -> builtins.list[Accumulator]:
    return [accumulator_from_row(row) for row in rows]


def get(symbol: str) -> Query[Accumulator | None]:
    """The symbol's accumulator, or None before its first fill."""
    return Query(
        sql.SELECT_ACCUMULATOR, {"symbol": check_symbol("symbol", symbol)}, decode=_accumulator
    )


def list() -> Query[builtins.list[Accumulator]]:
    """Every accumulator, by symbol."""
    return Query(sql.SELECT_ACCUMULATORS, fetch=ALL, decode=_accumulators)
