"""Statements of on-chain fills: record one (the database function record_fill), read, list.

Recording takes the symbol's lock first (see ``queries.accumulators``).
"""

from __future__ import annotations

from pypika import PostgreSQLQuery as Query

from persistence.queries.build import PagedList, columns, param, period
from persistence.tables import FILL_COLUMNS, FILLS

__all__ = ["RECORD_FILL", "SELECT_FILL_BY_KEY", "list_fills"]

# The units of work are functions of migration 0002 (record_fill, complete_execution,
# fail_execution, and start_due_execution which the three share): one round trip each, so the
# symbol's lock is held only while the server works. Their SQL, and why, is in that file.
# Parameters are cast to the functions' types so that any int or str psycopg sends resolves.
# record_fill is migration 0005's: it answers a repeat with the stored fill (already_stored).
RECORD_FILL = (
    'SELECT r."trade_id", r."already_stored", (r."execution").* FROM record_fill('
    "%(tx_hash)s::text, %(log_index)s::integer, %(symbol)s::text, %(amount)s::numeric, "
    "%(direction)s::text, %(price_usdc)s::numeric, %(created_at)s::timestamptz) AS r"
)

SELECT_FILL_BY_KEY = (
    Query.from_(FILLS)
    .select(*columns(FILLS, FILL_COLUMNS))
    .where((FILLS.tx_hash == param("tx_hash")) & (FILLS.log_index == param("log_index")))
    .get_sql()
)

list_fills = PagedList(
    "list_fills",
    FILLS,
    FILL_COLUMNS,
    filters={
        "symbol": FILLS.symbol == param("symbol"),
        "direction": FILLS.direction == param("direction"),
        **period(FILLS.created_at),
    },
)
