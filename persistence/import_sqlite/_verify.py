"""Verification against the file itself: stored amounts compared with the raw SQLite values.

After the insert, each layout opens the file anew (``_source.open_read_only``) and reads its
values without the conversion code, then feeds each (file value, stored amount) pair of a row to
:class:`Comparison`. The rule is the conversion's: a double must be within one ulp of its exact
binary value (most read back as the very same double), any other number exactly equal; the sums
come from the file's own values and must agree within the sum of those ulps. Which rows are
paired is the layout's business (its keys, which rows it inserted); this is the arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from persistence.import_sqlite._report import ImportFailed
from persistence.import_sqlite.convert import EXACT

__all__ = ["Comparison", "mismatch"]


class Comparison:
    """Running per-column totals of stored amounts and file values, and the tolerance."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        self.stored = dict.fromkeys(self.columns, Decimal(0))
        self.source = dict.fromkeys(self.columns, Decimal(0))
        self.slack = dict.fromkeys(self.columns, 0.0)  # the sum of the values' ulps

    def row(self, values: Sequence[Any], amounts: Sequence[Any]) -> tuple[str, Any, Any] | None:
        """Add one row; the first (column, value, amount) that disagrees, else None."""
        for column, value, amount in zip(self.columns, values, amounts, strict=True):
            if (value is None) != (amount is None):
                return column, value, amount
            if value is None:
                continue
            exact = Decimal(value)  # a double exactly, or the integer or text as stored
            if isinstance(value, float):
                ulp = math.ulp(value)
                self.slack[column] += ulp
                # most values read back as the same double: no exact arithmetic needed
                if float(amount) != value and abs(EXACT.subtract(amount, exact)) > Decimal(ulp):
                    return column, value, amount
            elif amount != exact:
                return column, value, amount
            self.stored[column] = EXACT.add(self.stored[column], amount)
            self.source[column] = EXACT.add(self.source[column], exact)
        return None

    def sums_apart(self) -> Iterator[tuple[str, Decimal, Decimal]]:
        """Each column whose stored sum and file sum differ by more than the tolerance."""
        for column in self.columns:
            stored, source = self.stored[column], self.source[column]
            if abs(EXACT.subtract(stored, source)) > Decimal(self.slack[column] * 1.01):
                yield column, stored, source


def mismatch(subject: str, column: str, value: Any, amount: Any, place: str) -> ImportFailed:
    """The failure for one value: ``subject`` names the row, ``place`` the file."""
    return ImportFailed(
        f"verification failed: {subject} {column} is {value!r} in {place} and {amount} in "
        "PostgreSQL, more than the double's resolution apart; nothing was imported"
    )
