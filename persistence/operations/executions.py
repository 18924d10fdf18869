"""Schwab executions of whole shares: complete, fail, read.

An execution starts when a symbol has no execution pending and a side holds at least one whole
share; the database function ``start_due_execution`` (migration 0002) is the one place that
decides it, for a recorded fill and for a completed or failed execution alike.
"""

from __future__ import annotations

import builtins
from collections.abc import Generator
from decimal import Decimal
from typing import Any

from persistence.converter import execution_from_row, link_from_row
from persistence.errors import InvalidTransition, NotFound
from persistence.models import Execution, ExecutionLink, ExecutionStatus
from persistence.operations import ALL, Query, Repeat, Step, Steps
from persistence.operations.checks import check_id
from persistence.queries import executions as sql
from persistence.validation import PRICE_CENTS, check_decimal, check_symbol, check_text


def _execution(row: Any) -> Execution | None:
    return None if row is None else execution_from_row(row)


def _executions(rows: Any) -> builtins.list[Execution]:
    return [execution_from_row(row) for row in rows]


def _links(rows: Any) -> builtins.list[ExecutionLink]:
    return [link_from_row(row) for row in rows]


def complete(execution_id: int, *, order_id: str, price_cents: Decimal | int) -> Steps[Execution]:
    """PENDING -> COMPLETED with Schwab's order id and fill price; returns the execution.

    Frees the symbol's pending slot and, if whole shares are waiting, starts its next execution
    in the same transaction. Raises NotFound and InvalidTransition as ``trades.update_status``;
    repeating a completion with the same values returns the stored execution.
    """
    check_id("id", execution_id)
    check_text("order_id", order_id)  # the Execution model's rule for its order_id
    if type(price_cents) is int:
        price_cents = Decimal(price_cents)
    check_decimal("price_cents", price_cents, PRICE_CENTS)
    params = {"id": execution_id, "order_id": order_id, "price_cents": price_cents}
    return _settled(sql.COMPLETE_EXECUTION, params, ExecutionStatus.COMPLETED)


def fail(execution_id: int) -> Steps[Execution]:
    """PENDING -> FAILED; returns the execution. Its shares go back to the fills they came from
    and to the symbol's accumulator, and the symbol's next execution starts if one is due."""
    check_id("id", execution_id)
    params = {"id": execution_id, "order_id": None, "price_cents": None}
    return _settled(sql.FAIL_EXECUTION, params, ExecutionStatus.FAILED)


def _settled(statement: str, params: dict[str, Any], target: ExecutionStatus) -> Steps[Execution]:
    repeat = Repeat()
    return Steps(_settle(statement, params, target, repeat), atomic=False, stored=repeat)


def _settle(
    statement: str, params: dict[str, Any], target: ExecutionStatus, repeat: Repeat
) -> Generator[Step, Any, Execution]:
    row = yield Query(statement, params)
    if row is None:
        current = yield from _repeated(params, target)
        repeat.found()
        return current
    return execution_from_row(row)


def _repeated(params: dict[str, Any], target: ExecutionStatus) -> Generator[Step, Any, Execution]:
    """The stored execution when the request repeats a move that landed; else the error."""
    row = yield Query(sql.SELECT_EXECUTION_BY_ID, params)
    if row is None:
        raise NotFound(f"no execution with id {params['id']}")
    current = execution_from_row(row)
    if current.status is target and (
        target is ExecutionStatus.FAILED
        or (current.order_id, current.price_cents) == (params["order_id"], params["price_cents"])
    ):
        return current  # a retry of a move that already landed, e.g. after a crash
    raise InvalidTransition(
        f"execution {params['id']} is {current.status.value} and cannot become {target.value}"
        + (
            " with other values"
            if current.status is target
            else ": only PENDING -> COMPLETED and PENDING -> FAILED are allowed"
        )
        + " (repeating a move with the same values is a no-op)"
    )


def get(execution_id: int) -> Query[Execution | None]:
    """The execution with that id, or None."""
    return Query(
        sql.SELECT_EXECUTION_BY_ID, {"id": check_id("id", execution_id)}, decode=_execution
    )


def pending(symbol: str | None = None) -> Query[builtins.list[Execution]]:
    """The PENDING executions (at most one per symbol), oldest first; of one symbol if given."""
    if symbol is None:
        return Query(sql.SELECT_PENDING_EXECUTIONS, fetch=ALL, decode=_executions)
    return Query(
        sql.SELECT_PENDING_EXECUTIONS_OF_SYMBOL,
        {"symbol": check_symbol("symbol", symbol)},
        fetch=ALL,
        decode=_executions,
    )


def links(execution_id: int) -> Query[builtins.list[ExecutionLink]]:
    """The fills that make up the execution and the shares each gave, by fill id."""
    return Query(
        sql.SELECT_EXECUTION_LINKS, {"id": check_id("id", execution_id)}, fetch=ALL, decode=_links
    )
