"""Statements of the per-symbol accumulators, whose rows are the symbols' locks.

Locking: every write to a symbol's fills, executions and links happens after its
``trade_accumulators`` row is locked (recording a fill upserts it; completing or failing an
execution locks it first, all inside the functions of migration 0002). That row is the symbol's
lock, held to the end of the transaction. Writers of one symbol queue on it; writers of
different symbols never meet. READ COMMITTED is enough: each statement that reads the symbol's
open fills starts after the lock is held, so it sees every committed change.
"""

from __future__ import annotations

from pypika import PostgreSQLQuery as Query

from persistence.queries.build import columns, param
from persistence.tables import ACCUMULATOR_COLUMNS, ACCUMULATORS

__all__ = ["SELECT_ACCUMULATOR", "SELECT_ACCUMULATORS"]

_ACCUMULATOR = columns(ACCUMULATORS, ACCUMULATOR_COLUMNS)
SELECT_ACCUMULATOR = (
    Query.from_(ACCUMULATORS)
    .select(*_ACCUMULATOR)
    .where(ACCUMULATORS.symbol == param("symbol"))
    .get_sql()
)
SELECT_ACCUMULATORS = (
    Query.from_(ACCUMULATORS).select(*_ACCUMULATOR).orderby(ACCUMULATORS.symbol).get_sql()
)
