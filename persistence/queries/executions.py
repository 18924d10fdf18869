"""Statements of Schwab executions: complete and fail (database functions), read, links.

Completing or failing takes the symbol's lock first (see ``queries.accumulators``); the
functions are migration 0002's, one round trip each (see ``queries.fills``).
"""

from __future__ import annotations

from pypika import PostgreSQLQuery as Query

from persistence.queries.build import columns, param
from persistence.tables import EXECUTION_COLUMNS, EXECUTIONS, LINK_COLUMNS, LINKS

__all__ = [
    "COMPLETE_EXECUTION",
    "FAIL_EXECUTION",
    "SELECT_EXECUTION_BY_ID",
    "SELECT_EXECUTION_LINKS",
    "SELECT_PENDING_EXECUTIONS",
    "SELECT_PENDING_EXECUTIONS_OF_SYMBOL",
]

COMPLETE_EXECUTION = (
    "SELECT * FROM complete_execution(%(id)s::bigint, %(order_id)s::text, %(price_cents)s::numeric)"
)
FAIL_EXECUTION = "SELECT * FROM fail_execution(%(id)s::bigint)"

_EXECUTION = columns(EXECUTIONS, EXECUTION_COLUMNS)
SELECT_EXECUTION_BY_ID = (
    Query.from_(EXECUTIONS).select(*_EXECUTION).where(EXECUTIONS.id == param("id")).get_sql()
)
SELECT_PENDING_EXECUTIONS = (
    Query.from_(EXECUTIONS)
    .select(*_EXECUTION)
    .where(EXECUTIONS.status == "PENDING")
    .orderby(EXECUTIONS.id)
    .get_sql()
)
SELECT_PENDING_EXECUTIONS_OF_SYMBOL = (
    Query.from_(EXECUTIONS)
    .select(*_EXECUTION)
    .where((EXECUTIONS.status == "PENDING") & (EXECUTIONS.symbol == param("symbol")))
    .orderby(EXECUTIONS.id)
    .get_sql()
)
SELECT_EXECUTION_LINKS = (
    Query.from_(LINKS)
    .select(*columns(LINKS, LINK_COLUMNS))
    .where(LINKS.execution_id == param("id"))
    .orderby(LINKS.trade_id)
    .get_sql()
)
