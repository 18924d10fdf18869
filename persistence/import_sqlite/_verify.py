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
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from persistence.import_sqlite._report import ImportFailed
from persistence.import_sqlite.convert import EXACT

__all__ = ["Comparison"]


class Comparison:
    """Running per-column totals of stored amounts and file values, and the tolerance.

    ``rows`` names a row in a failure (followed by its key), ``place`` names the file, and
    ``sums_of`` is put before a column's name in a failed sum.
    """

    def __init__(self, columns: Sequence[str], *, rows: str, place: str, sums_of: str = "") -> None:
        self.columns, self.rows, self.place, self.sums_of = tuple(columns), rows, place, sums_of
        self.stored = dict.fromkeys(self.columns, Decimal(0))
        self.source = dict.fromkeys(self.columns, Decimal(0))
        self.slack = dict.fromkeys(self.columns, 0.0)  # the sum of the values' ulps

    def row(self, key: Any, values: Sequence[Any], amounts: Sequence[Any]) -> None:
        """Add one row's file values and stored amounts; fail at the first that disagrees."""
        stored, source, slack = self.stored, self.source, self.slack  # locals: once per row
        for column, value, amount in zip(self.columns, values, amounts, strict=True):
            if (value is None) != (amount is None):
                raise self._mismatch(key, column, value, amount)
            if value is None:
                continue
            exact = Decimal(value)  # a double exactly, or the integer or text as stored
            if isinstance(value, float):
                ulp = math.ulp(value)
                slack[column] += ulp
                # most values read back as the same double: no exact arithmetic needed
                if float(amount) != value and abs(EXACT.subtract(amount, exact)) > Decimal(ulp):
                    raise self._mismatch(key, column, value, amount)
            elif amount != exact:
                raise self._mismatch(key, column, value, amount)
            stored[column] = EXACT.add(stored[column], amount)
            source[column] = EXACT.add(source[column], exact)

    def _mismatch(self, key: Any, column: str, value: Any, amount: Any) -> ImportFailed:
        return ImportFailed(
            f"verification failed: {self.rows} {key} {column} is {value!r} in {self.place} and "
            f"{amount} in PostgreSQL, more than the double's resolution apart; nothing was "
            "imported"
        )

    def check_sums(self) -> None:
        """Fail unless each column's stored sum is the file's within the sum of the ulps."""
        for column in self.columns:
            stored, source = self.stored[column], self.source[column]
            if abs(EXACT.subtract(stored, source)) > Decimal(self.slack[column] * 1.01):
                raise ImportFailed(
                    f"verification failed: the sum of {self.sums_of}{column} is {stored} in "
                    f"PostgreSQL and {source} in {self.place}; nothing was imported"
                )
