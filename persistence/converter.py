"""The one converter: models to query parameters, rows to models. Configured once, here.

Parameters: cattrs generates one function per model (``trade_params``, ``fill_params``) that
reads the fields into a dict keyed by column. psycopg adapts ``Decimal`` (exact NUMERIC) and
aware ``datetime`` itself, so those pass untouched, inlined by cattrs as plain attribute reads;
enums become their text.

Rows: psycopg returns ``Decimal`` for NUMERIC and aware ``datetime`` for TIMESTAMPTZ. Rows are
trusted: the database's types and CHECK constraints already guarantee what the models'
validators check, so building a model from a row skips them (measured: the validators would
cost more than fetching the row). Each ``*_from_row`` is generated once from the model's fields.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from operator import attrgetter
from types import MemberDescriptorType, NoneType, UnionType
from typing import Any, TypeGuard, TypeVar, Union, cast, get_args, get_origin

import attrs
import cattrs
from cattrs.fns import identity
from cattrs.gen import make_dict_unstructure_fn, override

from persistence.models import (
    Accumulator,
    Execution,
    ExecutionLink,
    Fill,
    QueuedEvent,
    SchwabAuth,
    Trade,
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
    "by_value",
    "converter",
    "event_from_row",
    "execution_from_row",
    "fill_from_row",
    "fill_params",
    "link_from_row",
    "row_decoder",
    "trade_copy_row",
    "trade_from_row",
    "trade_or_none",
    "trade_params",
]

T = TypeVar("T")

# --- models to parameters ---------------------------------------------------------------------

converter = cattrs.Converter()
_PASSTHROUGH = (Decimal, datetime, str, int)


def _passes_through(kind: Any) -> bool:
    """Whether ``kind`` is an optional of a type that passes through (``Decimal | None``...)."""
    return get_origin(kind) in (Union, UnionType) and all(
        arg is NoneType or arg in _PASSTHROUGH for arg in get_args(kind)
    )


# cattrs' own identity is recognised and inlined: such a field costs one attribute read
for _passthrough in _PASSTHROUGH:
    converter.register_unstructure_hook(_passthrough, identity)
converter.register_unstructure_hook_func(_passes_through, identity)
# a StrEnum's str() is its value as a plain str (measured: faster than reading .value)
converter.register_unstructure_hook(StrEnum, str)
# record_fill takes no id: the database assigns it
converter.register_unstructure_hook(
    Fill, make_dict_unstructure_fn(Fill, converter, id=override(omit=True))
)

trade_params: Callable[[Trade], dict[str, Any]] = converter.get_unstructure_hook(Trade)
fill_params: Callable[[Fill], dict[str, Any]] = converter.get_unstructure_hook(Fill)
# COPY rows, in TRADE_COLUMNS order; StrEnum members are str, so COPY writes their value
trade_copy_row: Callable[[Trade], tuple[Any, ...]] = attrgetter(*TRADE_COLUMNS)

# --- rows to models ---------------------------------------------------------------------------


def row_decoder(
    cls: type[T],
    columns: tuple[str, ...],
    *,
    utc: tuple[str, ...] = (),
    optional: bool = False,
    **decode: dict[Any, Any],
) -> Callable[..., T]:
    """A function building ``cls`` from a row in ``columns`` order without running validators.

    ``decode`` maps a field to a dict from stored value to model value, looked up inline: this
    runs once per fetched row. A field whose type is an enum is decoded by value unless given.
    ``utc`` names the datetime fields, given back in UTC whatever time zone the session was in
    (one identity check when it already is UTC). ``optional``: a row of None gives None. The
    function takes the row, and optionally the class, which it ignores (callers may name it).
    """
    attributes = attrs.fields(attrs.resolve_types(cast(Any, cls)))
    fields = [field.name for field in attributes]
    if tuple(fields) != columns:
        raise TypeError(f"{cls.__name__} fields {fields} differ from the columns {columns}")
    enums = {field.name: by_value(field.type) for field in attributes if _is_enum(field.type)}
    decode = {**enums, **decode}
    filler = _filler(cls)
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_UTC": UTC}
    lines = ["def build(row, _type=None):"]
    if optional:
        lines += ["    if row is None:", "        return None"]
    lines.append("    obj = _new(_cls)" if filler is None else "    obj = _new(_filler)")
    namespace["_filler"] = filler
    for index, name in enumerate(fields):
        value = f"row[{index}]"
        if name in decode:
            namespace[f"_decode_{name}"] = decode[name]
            value = f"_decode_{name}[{value}]"
        elif name in utc:
            lines.append(f"    _at = {value}")
            value = "_at if _at is None or _at.tzinfo is _UTC else _at.astimezone(_UTC)"
        if filler is None:
            namespace[f"_set_{name}"] = _setter(cls, name)
            lines.append(f"    _set_{name}(obj, {value})")
        else:
            lines.append(f"    obj.{name} = {value}")
    if filler is not None:
        lines.append("    obj.__class__ = _cls")
    lines.append("    return obj")
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from field names, like attrs itself
    return namespace["build"]  # type: ignore[no-any-return]


def _filler(cls: type) -> type | None:
    """A subclass of a slotted ``cls`` that adds no slot and sets its fields with a plain store:
    the decoder fills one of these, then makes it a ``cls`` (``__class__`` assignment, allowed
    between classes of the same layout). A store into a slot is specialised by the interpreter
    (measured: 14,800 instructions per ``Trade`` with the slots' descriptors, about 4,000 this
    way), and what the decoder returns is a plain, frozen ``cls``. None when ``cls`` has no
    slots or refuses the assignment: the decoder sets each field through ``_setter`` then."""
    if "__slots__" not in vars(cls) or "__dict__" in dir(cls):
        return None
    # both, so that the class's setattr slot is the generic one the interpreter specialises
    plain = {"__slots__": (), "__setattr__": object.__setattr__, "__delattr__": object.__delattr__}
    filler = type(f"_{cls.__name__}Filler", (cls,), plain)
    try:
        object.__new__(filler).__class__ = cls  # type: ignore[assignment]
    except TypeError:
        return None
    return filler


def _setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """What sets field ``name`` on a new ``cls`` past its frozen ``__setattr__``: the slot's own
    descriptor (half the cost of ``object.__setattr__``, which looks it up by name each time),
    or ``object.__setattr__`` for a class without slots."""
    slot = getattr(cls, name, None)  # a slot, inherited or not, is a member descriptor
    if isinstance(slot, MemberDescriptorType):
        return slot.__set__

    def set_field(obj: Any, value: Any) -> None:
        object.__setattr__(obj, name, value)

    return set_field


def _is_enum(kind: Any) -> TypeGuard[type[StrEnum]]:
    return isinstance(kind, type) and issubclass(kind, StrEnum)


def by_value(kind: type[StrEnum]) -> dict[str, StrEnum]:
    """The members of ``kind`` by their stored text."""
    return {member.value: member for member in kind}


trade_from_row: Callable[..., Trade] = row_decoder(
    Trade, TRADE_COLUMNS, utc=("created_at", "completed_at")
)
# the point read's decode (None for no row), a call less than a wrapper around trade_from_row
trade_or_none: Callable[..., Trade | None] = row_decoder(
    Trade, TRADE_COLUMNS, utc=("created_at", "completed_at"), optional=True
)
auth_from_row: Callable[..., SchwabAuth] = row_decoder(
    SchwabAuth, SCHWAB_AUTH_COLUMNS, utc=("access_token_fetched_at", "refresh_token_fetched_at")
)
fill_from_row: Callable[..., Fill] = row_decoder(Fill, FILL_COLUMNS, utc=("created_at",))
execution_from_row: Callable[..., Execution] = row_decoder(
    Execution, EXECUTION_COLUMNS, utc=("executed_at", "created_at")
)
accumulator_from_row: Callable[..., Accumulator] = row_decoder(
    Accumulator, ACCUMULATOR_COLUMNS, utc=("last_updated",)
)
link_from_row: Callable[..., ExecutionLink] = row_decoder(ExecutionLink, LINK_COLUMNS)
event_from_row: Callable[..., QueuedEvent] = row_decoder(
    QueuedEvent,
    EVENT_COLUMNS,
    utc=("created_at", "processed_at", "last_failed_at", "next_attempt_at", "dead_at"),
)
