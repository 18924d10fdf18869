"""The one cattrs converter: models to query parameters, rows to models. Configured once, here.

psycopg already returns ``Decimal`` for NUMERIC and aware ``datetime`` for TIMESTAMPTZ, so those
pass untouched. Rows are trusted: the database's types and CHECK constraints already guarantee
what the models' validators check, so building a model from a row skips them (measured: the
validators would cost more than fetching the row).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from operator import attrgetter
from typing import Any, TypeVar, cast

import attrs
import cattrs

from persistence.models import (
    Accumulator,
    Execution,
    ExecutionLink,
    ExecutionStatus,
    Fill,
    Instruction,
    QueuedEvent,
    SchwabAuth,
    Trade,
    TradeStatus,
)
from persistence.tables import (
    ACCUMULATOR_COLUMNS,
    EVENT_COLUMNS,
    EXECUTION_COLUMNS,
    FILL_COLUMNS,
    LINK_COLUMNS,
    SCHWAB_AUTH_COLUMNS,
    TRADE_COLUMNS,
)

__all__ = [
    "accumulator_from_row",
    "auth_from_row",
    "auth_params",
    "converter",
    "event_from_row",
    "execution_from_row",
    "fill_from_row",
    "link_from_row",
    "trade_copy_row",
    "trade_from_row",
    "trade_params",
]

T = TypeVar("T")

converter = cattrs.Converter()


def _identity(value: T) -> T:
    return value


# simple types first: the adapter's own types pass through; enums become their text value
for _passthrough in (Decimal, datetime, str, int):
    converter.register_unstructure_hook(_passthrough, _identity)
converter.register_unstructure_hook(StrEnum, lambda member: member.value)


def _row_structure_fn(
    cls: type[T], columns: tuple[str, ...], *, utc: tuple[str, ...] = (), **decode: dict[Any, Any]
) -> Callable[[Any, Any], T]:
    """A function building ``cls`` from a row in ``columns`` order without running validators.

    ``decode`` maps a field to a dict from stored value to model value (the enums), looked up
    inline: this runs once per fetched row. ``utc`` names the datetime fields, given back in UTC
    whatever time zone the session was in (one identity check when it already is UTC).
    """
    fields = [field.name for field in attrs.fields(cast(Any, cls))]
    if tuple(fields) != columns:
        raise TypeError(f"{cls.__name__} fields {fields} differ from the columns {columns}")
    namespace: dict[str, Any] = {
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_cls": cls,
        "_UTC": UTC,
    }
    lines = ["def build(row, _type=None):", "    obj = _new(_cls)"]
    for index, name in enumerate(fields):
        value = f"row[{index}]"
        if name in decode:
            namespace[f"_decode_{name}"] = decode[name]
            value = f"_decode_{name}[{value}]"
        elif name in utc:
            lines.append(f"    _at = {value}")
            value = "_at if _at is None or _at.tzinfo is _UTC else _at.astimezone(_UTC)"
        lines.append(f"    _set(obj, {name!r}, {value})")
    lines.append("    return obj")
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from field names, like attrs itself
    return namespace["build"]  # type: ignore[no-any-return]


def _by_value(kind: type[StrEnum]) -> dict[str, StrEnum]:
    return {member.value: member for member in kind}


trade_from_row: Callable[[Any, Any], Trade] = _row_structure_fn(
    Trade,
    TRADE_COLUMNS,
    utc=("created_at", "completed_at"),
    schwab_instruction=_by_value(Instruction),
    status=_by_value(TradeStatus),
)
auth_from_row: Callable[[Any, Any], SchwabAuth] = _row_structure_fn(
    SchwabAuth, SCHWAB_AUTH_COLUMNS, utc=("access_token_fetched_at", "refresh_token_fetched_at")
)
converter.register_structure_hook(Trade, trade_from_row)
converter.register_structure_hook(SchwabAuth, auth_from_row)

trade_params: Callable[[Trade], dict[str, Any]] = converter.get_unstructure_hook(Trade)
auth_params: Callable[[SchwabAuth], dict[str, Any]] = converter.get_unstructure_hook(SchwabAuth)
# COPY rows, in TRADE_COLUMNS order; StrEnum members are str, so COPY writes their value
trade_copy_row: Callable[[Trade], tuple[Any, ...]] = attrgetter(*TRADE_COLUMNS)

# the trade-batching model: rows to models (models to parameters are built by the operations)
fill_from_row: Callable[[Any, Any], Fill] = _row_structure_fn(
    Fill, FILL_COLUMNS, utc=("created_at",), direction=_by_value(Instruction)
)
execution_from_row: Callable[[Any, Any], Execution] = _row_structure_fn(
    Execution,
    EXECUTION_COLUMNS,
    utc=("executed_at", "created_at"),
    direction=_by_value(Instruction),
    status=_by_value(ExecutionStatus),
)
accumulator_from_row: Callable[[Any, Any], Accumulator] = _row_structure_fn(
    Accumulator, ACCUMULATOR_COLUMNS, utc=("last_updated",)
)
link_from_row: Callable[[Any, Any], ExecutionLink] = _row_structure_fn(ExecutionLink, LINK_COLUMNS)
event_from_row: Callable[[Any, Any], QueuedEvent] = _row_structure_fn(
    QueuedEvent,
    EVENT_COLUMNS,
    utc=("created_at", "processed_at", "last_failed_at", "next_attempt_at", "dead_at"),
)
for _model, _build in (
    (Fill, fill_from_row),
    (Execution, execution_from_row),
    (Accumulator, accumulator_from_row),
    (ExecutionLink, link_from_row),
    (QueuedEvent, event_from_row),
):
    converter.register_structure_hook(_model, _build)
