"""Every statement, built with PyPika once; builders are pure (SQL and parameters, no I/O).

One module per aggregate, named as its operations module is: ``trades``, ``auth``, ``fills``,
``executions``, ``accumulators``, ``events``, ``event_store`` (written out as text: its
statements lean on PostgreSQL functions and CTEs that PyPika does not model); what they share
(placeholders, the paged-list builder) is in ``build``. Values always travel as bound
parameters, never inside the SQL.

The statements of trades and of the Schwab tokens are importable from here too, as they always
were: ``print(queries.INSERT_TRADE)`` shows one. ``statements()`` returns them all, every
variant of each paged list included, and ``python -m persistence.queries`` prints them.
"""

from __future__ import annotations

from types import ModuleType

from persistence.queries import (
    accumulators,
    auth,
    event_store,
    events,
    executions,
    fills,
    trades,
)
from persistence.queries.auth import (
    COUNT_SCHWAB_AUTH_BY_KEY,
    INSERT_SCHWAB_AUTH_IF_ABSENT,
    SELECT_SCHWAB_AUTH,
    SELECT_SCHWAB_AUTH_FOR_UPDATE,
    UPDATE_SCHWAB_AUTH_TOKENS,
    UPSERT_SCHWAB_AUTH,
)
from persistence.queries.build import PagedList, quoted
from persistence.queries.trades import (
    ADVANCE_TRADE_ID,
    COPY_TRADES_STAGE,
    COUNT_TRADES,
    COUNT_TRADES_BY_STATUS,
    CREATE_TRADES_STAGE,
    INSERT_TRADE,
    INSERT_TRADE_WITH_ID,
    INSERT_TRADES_FROM_STAGE,
    SELECT_PENDING_TRADES,
    SELECT_TRADE_BY_ID,
    SELECT_TRADE_BY_KEY,
    TRADES_STAGE,
    TRUNCATE_TRADES_STAGE,
    UPDATE_TRADE_STATUS,
    copy_trades,
    list_trades,
)

__all__ = [
    "ADVANCE_TRADE_ID",
    "COPY_TRADES_STAGE",
    "COUNT_SCHWAB_AUTH_BY_KEY",
    "COUNT_TRADES",
    "COUNT_TRADES_BY_STATUS",
    "CREATE_TRADES_STAGE",
    "INSERT_SCHWAB_AUTH_IF_ABSENT",
    "INSERT_TRADE",
    "INSERT_TRADES_FROM_STAGE",
    "INSERT_TRADE_WITH_ID",
    "SELECT_PENDING_TRADES",
    "SELECT_SCHWAB_AUTH",
    "SELECT_SCHWAB_AUTH_FOR_UPDATE",
    "SELECT_TRADE_BY_ID",
    "SELECT_TRADE_BY_KEY",
    "TRADES_STAGE",
    "TRUNCATE_TRADES_STAGE",
    "UPDATE_SCHWAB_AUTH_TOKENS",
    "UPDATE_TRADE_STATUS",
    "UPSERT_SCHWAB_AUTH",
    "copy_trades",
    "list_trades",
    "quoted",
    "statements",
]

MODULES: tuple[ModuleType, ...] = (
    trades,
    auth,
    fills,
    executions,
    accumulators,
    events,
    event_store,
)


def statements() -> dict[str, str]:
    """Every fixed statement by name, and each paged list's variants, for docs and debugging."""
    found: dict[str, str] = {}
    for module in MODULES:
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, PagedList):
                found.update(value.statements())
            elif name.isupper() and isinstance(value, str) and " " in value:
                found[name] = value
    return found
