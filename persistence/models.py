"""Domain objects: frozen, slotted attrs classes, validated when built. They know nothing of SQL.

Money and quantities are ``Decimal`` (a ``float`` is refused), checked against the precision and
scale they are stored with; more digits than fit is an error, never a rounding. Datetimes must be
timezone-aware and are normalised to UTC. ``tx_hash`` is normalised to lower case.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

import attrs

from persistence.errors import ValidationError

__all__ = [
    "AMOUNT",
    "IO_RATIO",
    "MAX_EVENT_ERROR",
    "MAX_JSON_DEPTH",
    "MAX_SHARES",
    "PRICE_CENTS",
    "SYMBOL_PATTERN",
    "Accumulator",
    "Execution",
    "ExecutionLink",
    "ExecutionStatus",
    "Fill",
    "Instruction",
    "NumericSpec",
    "QueuedEvent",
    "RecordedFill",
    "SchwabAuth",
    "Trade",
    "TradeStatus",
    "check_json_object",
    "check_symbol",
    "io_ratio",
    "price_per_share_cents",
    "surrogate_at",
    "to_utc",
]


class Instruction(StrEnum):
    """The side of the hedge at Schwab."""

    BUY = "BUY"
    SELL = "SELL"


class TradeStatus(StrEnum):
    """Where a trade's hedge stands. PENDING moves to COMPLETED or FAILED, and no further."""

    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class ExecutionStatus(StrEnum):
    """Where a Schwab execution stands. PENDING moves to COMPLETED or FAILED, and no further."""

    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class NumericSpec(NamedTuple):
    """PostgreSQL NUMERIC(precision, scale): at most precision - scale digits before the point."""

    precision: int
    scale: int


# Token amounts: 18 decimals (the ERC-20 norm), up to 10^20 tokens.
AMOUNT = NumericSpec(38, 18)
# input / output: ratios from 1e-12 to 1e30 keep at least 18 significant digits (a double has 17).
IO_RATIO = NumericSpec(60, 30)
# Price per share in US cents: up to 10^12 cents, 18 decimals so quotients such as 100/3 keep
# every digit a double or an 18-decimal amount can carry.
PRICE_CENTS = NumericSpec(30, 18)

E = TypeVar("E", bound=StrEnum)

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# the most whole shares one execution holds (its column is an integer); more waits for the next
MAX_SHARES = INT32_MAX
_TX_HASH = re.compile(r"0x[0-9a-f]{64}")
_EXACT = Context(prec=100)


def _fail(name: str, value: Any, reason: str) -> ValidationError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValidationError(f"{name}={shown}: {reason}")


def check_decimal(name: str, value: Any, spec: NumericSpec, *, positive: bool = True) -> None:
    """Raise ValidationError unless ``value`` is a finite Decimal that fits ``spec`` exactly."""
    if not isinstance(value, Decimal):
        if isinstance(value, float):
            raise _fail(
                name,
                value,
                "a float is refused: binary floating point cannot hold most decimal amounts "
                "exactly; pass a Decimal built from a string, e.g. Decimal('1.1')",
            )
        raise _fail(name, value, f"must be a Decimal, not {type(value).__name__}")
    if not value.is_finite():
        raise _fail(name, value, "must be a finite number (not NaN or Infinity)")
    if positive and value <= 0:
        raise _fail(name, value, "must be greater than zero")
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    count = len(digits)
    while count > 1 and digits[count - 1] == 0 and exponent < 0:  # trailing zeros do not count
        count -= 1
        exponent += 1
    if not any(digits):
        return
    decimals = max(0, -exponent)
    whole = max(0, count + exponent)
    if decimals > spec.scale:
        raise _fail(
            name,
            value,
            f"has {decimals} decimal places, the column keeps {spec.scale}; round it explicitly "
            "(Decimal.quantize) if that is what you mean",
        )
    if whole > spec.precision - spec.scale:
        raise _fail(
            name,
            value,
            f"has {whole} digits before the point, the column holds at most "
            f"{spec.precision - spec.scale}",
        )


def _decimal_field(spec: NumericSpec, *, positive: bool = True) -> Any:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            check_decimal(attribute.name, value, spec, positive=positive)

    return validate


def _to_decimal(value: Any) -> Any:
    # ints are exact; everything else is left for the validator to judge
    if type(value) is int:
        return Decimal(value)
    return value


def to_utc(name: str, value: datetime) -> datetime:
    """The aware ``value`` in UTC; ValidationError naming ``name`` when UTC cannot hold it.

    ``datetime.max`` one hour west of UTC is in year 10000 in UTC, which Python cannot represent
    (PostgreSQL could: its range is 4713 BC to 294276 AD, wider than Python's on both sides).
    """
    try:
        return value.astimezone(UTC)
    except OverflowError:
        pass  # raised below, outside the handler: no chained OverflowError
    raise _fail(
        name,
        value,
        "is outside the range of datetime once converted to UTC (years 1 to 9999); pass a "
        "moment within that range",
    )


def _to_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None and value.utcoffset() is not None:
        try:
            return value.astimezone(UTC)
        except OverflowError:
            return value  # left in its zone: _aware, which knows the field's name, refuses it
    return value


def _aware(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, datetime):
        raise _fail(attribute.name, value, f"must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise _fail(
            attribute.name,
            value,
            "must be timezone-aware: a naive datetime is ambiguous; attach a zone, e.g. "
            "datetime.now(UTC) or value.replace(tzinfo=UTC) for a UTC reading",
        )
    if value.tzinfo is not UTC:  # _to_utc could not convert it
        to_utc(attribute.name, value)


# A lone surrogate (U+D800 to U+DFFF unpaired, e.g. from bytes decoded with surrogateescape or
# a JSON "\ud800" escape) is a str character that UTF-8 cannot encode: psycopg would raise a
# UnicodeEncodeError whose repr carries the whole string. Refused first, by position.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_REASON = (
    "UTF-8 cannot encode a lone surrogate, so PostgreSQL cannot store it; it usually comes from "
    "bytes decoded with errors='surrogateescape' or a bad JSON escape: decode the source strictly"
)


def surrogate_at(value: str) -> int | None:
    """The index of the first lone surrogate in ``value``, or None when UTF-8 can encode it."""
    if value.isascii():
        return None
    found = _SURROGATE.search(value)
    return None if found is None else found.start()


def _text(*, optional: bool = False, max_length: int = 256) -> Any:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str):
            raise _fail(attribute.name, value, f"must be a str, not {type(value).__name__}")
        if not value or value != value.strip():
            raise _fail(attribute.name, value, "must be non-empty, without surrounding spaces")
        if "\x00" in value:
            raise _fail(attribute.name, value, "must not contain a NUL character")
        if (index := surrogate_at(value)) is not None:
            raise _fail(
                attribute.name,
                value,
                f"holds a lone surrogate (U+{ord(value[index]):04X}) at index {index}: "
                + _SURROGATE_REASON,
            )
        if len(value) > max_length:
            raise _fail(attribute.name, value, f"is longer than {max_length} characters")

    return validate


class _Named(NamedTuple):
    name: str


def check_text(name: str, value: Any, *, optional: bool = False, max_length: int = 256) -> None:
    """Raise ValidationError unless ``value`` is text the models accept in a str field.

    The models' own validator, for arguments that are not a model's field (an order id given to
    ``update_status`` or ``executions.complete``), so that nothing a model refuses gets in.
    """
    attribute: Any = _Named(name)  # the validator reads only the attribute's name
    _text(optional=optional, max_length=max_length)(None, attribute, value)


def _secret(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # like _text, but the message never shows the value, nor any part or position of it
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValidationError(
            f"{attribute.name} must be a non-empty str without NUL characters (value not shown)"
        )
    if surrogate_at(value) is not None:
        raise ValidationError(
            f"{attribute.name} holds a lone surrogate (value not shown): {_SURROGATE_REASON}"
        )


# Characters that show nothing or change how text around them looks: control (Cc), format (Cf,
# e.g. the zero-width space U+200B), surrogate (Cs), private use (Co), line and paragraph
# separators (Zl, Zp). Two symbols that differ only by one of them look the same.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _visible_text(*, max_length: int) -> Any:
    """``_text``, and every character visible and in NFKC form: a full-width or otherwise
    compatibility form of a letter (U+FF21 for 'A') is a lookalike of the plain one."""
    text = _text(max_length=max_length)

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        text(instance, attribute, value)
        if value.isascii() and value.isprintable():
            return
        for index, char in enumerate(value):
            if unicodedata.category(char) in _INVISIBLE:
                raise _fail(
                    attribute.name,
                    value,
                    f"holds an invisible or control character (U+{ord(char):04X}) at index "
                    f"{index}: it would make a lookalike of another symbol; remove it",
                )
        if unicodedata.normalize("NFKC", value) != value:
            raise _fail(
                attribute.name,
                value,
                "is not in Unicode NFKC form (full-width or other compatibility characters "
                "look like plain ones): store "
                f"{unicodedata.normalize('NFKC', value)!r} instead if that is the symbol",
            )

    return validate


# A symbol (Fill.symbol, Execution.symbol, Accumulator.symbol, Trade.schwab_ticker): ASCII only,
# so that no lookalike ('AAPL\u200b', full-width '\uff21\uff21\uff30\uff2c', Cyrillic
# '\u0410') starts books of its own.
# Case is kept: 'tAAPL' and 'TAAPL' are two symbols.
SYMBOL_PATTERN = "[A-Za-z0-9./-]{1,16}"
_SYMBOL_FORM = re.compile(SYMBOL_PATTERN)
_SYMBOL_RULE = (
    "a symbol is 1 to 16 ASCII letters, digits, '.', '-' or '/' (e.g. 'AAPL', 'BRK.B', "
    "'BRK/B'), case kept"
)


def check_symbol(name: str, value: Any) -> str:
    """``value`` if it is a symbol (``SYMBOL_PATTERN``); else ValidationError naming ``name``
    and the first character that is not allowed."""
    if isinstance(value, str) and _SYMBOL_FORM.fullmatch(value):
        return value
    if not isinstance(value, str):
        raise _fail(name, value, f"must be a str, not {type(value).__name__}: {_SYMBOL_RULE}")
    if not value:
        raise _fail(name, value, f"must be non-empty: {_SYMBOL_RULE}")
    if len(value) > 16:
        raise _fail(name, value, f"is longer than 16 characters: {_SYMBOL_RULE}")
    index, char = next((i, c) for i, c in enumerate(value) if not _SYMBOL_FORM.match(c))
    if char == " ":
        described = "a space"
    elif char.isprintable():
        described = f"{char!r} (U+{ord(char):04X})"
    else:
        described = f"U+{ord(char):04X}"
    raise _fail(name, value, f"holds {described} at index {index}, not allowed: {_SYMBOL_RULE}")


def _symbol(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_symbol(attribute.name, value)


_SYMBOL = _symbol


def _lower_hex(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _tx_hash(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not _TX_HASH.fullmatch(value):
        raise _fail(attribute.name, value, "must be 0x followed by 64 hexadecimal digits")


def _integer(minimum: int, maximum: int = INT32_MAX, *, optional: bool = False) -> Any:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and (optional or attribute.name == "id"):
            return
        if type(value) is not int:
            raise _fail(attribute.name, value, f"must be an int, not {type(value).__name__}")
        if not minimum <= value <= maximum:
            raise _fail(attribute.name, value, f"must be between {minimum} and {maximum}")

    return validate


def _member(kind: type[E], value: Any) -> E:
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValidationError(
            f"{value!r} is not a valid {kind.__name__}; use one of {allowed}"
        ) from None


def _to_instruction(value: Any) -> Instruction:
    return _member(Instruction, value)


def _to_status(value: Any) -> TradeStatus:
    return _member(TradeStatus, value)


@attrs.frozen(kw_only=True)
class Trade:
    """One on-chain fill and its hedge at Schwab.

    ``id`` and ``created_at`` are set by the database on insert when left out; ``completed_at``
    is set when the trade leaves PENDING.
    """

    tx_hash: str = attrs.field(converter=_lower_hex, validator=_tx_hash)
    log_index: int = attrs.field(validator=_integer(0))
    onchain_input_symbol: str = attrs.field(validator=_visible_text(max_length=64))
    onchain_input_amount: Decimal = attrs.field(
        converter=_to_decimal, validator=_decimal_field(AMOUNT)
    )
    onchain_output_symbol: str = attrs.field(validator=_visible_text(max_length=64))
    onchain_output_amount: Decimal = attrs.field(
        converter=_to_decimal, validator=_decimal_field(AMOUNT)
    )
    onchain_io_ratio: Decimal = attrs.field(
        converter=_to_decimal, validator=_decimal_field(IO_RATIO)
    )
    onchain_price_per_share_cents: Decimal = attrs.field(
        converter=_to_decimal, validator=_decimal_field(PRICE_CENTS)
    )
    schwab_ticker: str = attrs.field(validator=_SYMBOL)
    schwab_instruction: Instruction = attrs.field(converter=_to_instruction)
    schwab_quantity: int = attrs.field(validator=_integer(1))
    schwab_price_per_share_cents: Decimal | None = attrs.field(
        default=None, converter=_to_decimal, validator=_decimal_field(PRICE_CENTS)
    )
    status: TradeStatus = attrs.field(default=TradeStatus.PENDING, converter=_to_status)
    schwab_order_id: str | None = attrs.field(default=None, validator=_text(optional=True))
    id: int | None = attrs.field(default=None, validator=_integer(1, 2**63 - 1))
    created_at: datetime | None = attrs.field(default=None, converter=_to_utc, validator=_aware)
    completed_at: datetime | None = attrs.field(default=None, converter=_to_utc, validator=_aware)

    def __attrs_post_init__(self) -> None:
        if self.status is TradeStatus.PENDING:
            if self.completed_at is not None:
                raise _fail(
                    "completed_at", self.completed_at, "a PENDING trade has no completed_at"
                )
        else:
            if self.completed_at is None:
                raise ValidationError(f"completed_at: a {self.status} trade needs completed_at")
            if self.status is TradeStatus.COMPLETED and self.schwab_order_id is None:
                raise ValidationError(
                    "schwab_order_id: a COMPLETED trade needs its Schwab order id"
                )


def _hidden(value: object) -> str:
    return "'***'"


@attrs.frozen(kw_only=True)
class SchwabAuth:
    """The Schwab OAuth tokens and when each was fetched. ``repr`` never shows a token."""

    access_token: str = attrs.field(validator=_secret, repr=_hidden)
    access_token_fetched_at: datetime = attrs.field(converter=_to_utc, validator=_aware)
    refresh_token: str = attrs.field(validator=_secret, repr=_hidden)
    refresh_token_fetched_at: datetime = attrs.field(converter=_to_utc, validator=_aware)

    def __attrs_post_init__(self) -> None:
        for name in ("access_token_fetched_at", "refresh_token_fetched_at"):
            if getattr(self, name) is None:
                raise ValidationError(f"{name} is required")


def _quotient(numerator: Decimal, denominator: Decimal, spec: NumericSpec, name: str) -> Decimal:
    exact = _EXACT.divide(numerator, denominator)
    result = exact.quantize(
        Decimal(1).scaleb(-spec.scale), rounding=ROUND_HALF_EVEN, context=_EXACT
    )
    check_decimal(name, result, spec)
    return result


def io_ratio(input_amount: Decimal, output_amount: Decimal) -> Decimal:
    """``input_amount / output_amount``, rounded half-even to 30 decimal places (IO_RATIO)."""
    check_decimal("input_amount", input_amount, AMOUNT)
    check_decimal("output_amount", output_amount, AMOUNT)
    return _quotient(input_amount, output_amount, IO_RATIO, "onchain_io_ratio")


def price_per_share_cents(usdc_amount: Decimal, shares: Decimal) -> Decimal:
    """``usdc_amount * 100 / shares`` in cents, rounded half-even to 18 places (PRICE_CENTS)."""
    check_decimal("usdc_amount", usdc_amount, AMOUNT)
    check_decimal("shares", shares, AMOUNT)
    return _quotient(
        _EXACT.multiply(usdc_amount, 100), shares, PRICE_CENTS, "price_per_share_cents"
    )


# --- the trade-batching model ----------------------------------------------------------------

_ID = _integer(1, INT64_MAX)
_OPTIONAL_ID = _integer(1, INT64_MAX, optional=True)


def _to_execution_status(value: Any) -> ExecutionStatus:
    return _member(ExecutionStatus, value)


@attrs.frozen
class Fill:
    """One on-chain fill of ``amount`` shares of ``symbol``: BUY adds to the long side.

    ``id`` and ``created_at`` are set by the database when the fill is recorded.
    """

    tx_hash: str = attrs.field(converter=_lower_hex, validator=_tx_hash)
    log_index: int = attrs.field(validator=_integer(0))
    symbol: str = attrs.field(validator=_SYMBOL)
    amount: Decimal = attrs.field(converter=_to_decimal, validator=_decimal_field(AMOUNT))
    direction: Instruction = attrs.field(converter=_to_instruction)
    price_usdc: Decimal = attrs.field(converter=_to_decimal, validator=_decimal_field(AMOUNT))
    id: int | None = attrs.field(default=None, validator=_ID)
    created_at: datetime | None = attrs.field(default=None, converter=_to_utc, validator=_aware)


@attrs.frozen
class Execution:
    """A hedge at Schwab of whole ``shares``; PENDING until completed (with its order id and
    price) or failed (its shares go back to the symbol's accumulator)."""

    id: int = attrs.field(validator=_ID)
    symbol: str = attrs.field(validator=_SYMBOL)
    shares: int = attrs.field(validator=_integer(1, MAX_SHARES))
    direction: Instruction = attrs.field(converter=_to_instruction)
    status: ExecutionStatus = attrs.field(converter=_to_execution_status)
    order_id: str | None = attrs.field(validator=_text(optional=True))
    price_cents: Decimal | None = attrs.field(
        converter=_to_decimal, validator=_decimal_field(PRICE_CENTS)
    )
    executed_at: datetime | None = attrs.field(converter=_to_utc, validator=_aware)
    created_at: datetime = attrs.field(converter=_to_utc, validator=_aware)

    def __attrs_post_init__(self) -> None:
        if self.status is ExecutionStatus.PENDING:
            if (self.order_id, self.price_cents, self.executed_at) != (None, None, None):
                raise ValidationError(
                    "a PENDING execution has no order_id, price_cents or executed_at"
                )
        elif self.executed_at is None:
            raise ValidationError(f"executed_at: a {self.status} execution needs executed_at")
        elif self.status is ExecutionStatus.COMPLETED and (
            self.order_id is None or self.price_cents is None
        ):
            raise ValidationError("a COMPLETED execution needs its order_id and price_cents")


@attrs.frozen
class Accumulator:
    """A symbol's fractional shares waiting to be hedged, per side, and its pending execution."""

    symbol: str = attrs.field(validator=_SYMBOL)
    accumulated_long: Decimal = attrs.field(
        converter=_to_decimal, validator=_decimal_field(AMOUNT, positive=False)
    )
    accumulated_short: Decimal = attrs.field(
        converter=_to_decimal, validator=_decimal_field(AMOUNT, positive=False)
    )
    pending_execution_id: int | None = attrs.field(validator=_OPTIONAL_ID)
    last_updated: datetime = attrs.field(converter=_to_utc, validator=_aware)


@attrs.frozen
class ExecutionLink:
    """``contributed_shares`` of fill ``trade_id`` went into execution ``execution_id``."""

    trade_id: int = attrs.field(validator=_ID)
    execution_id: int = attrs.field(validator=_ID)
    contributed_shares: Decimal = attrs.field(
        converter=_to_decimal, validator=_decimal_field(AMOUNT)
    )


# The deepest nesting of objects and arrays a JSON value may have, the outer object being level
# 1. Deeper input is refused before anything recurses over it (json.dumps, the server's parser).
MAX_JSON_DEPTH = 64


def _json_path(name: str, path: tuple[str | int, ...]) -> str:
    return name + "".join(f"[{_short(step)}]" for step in path)


def _json_text(name: str, path: tuple[str | int, ...], text: str, what: str) -> None:
    if "\x00" in text:
        raise ValidationError(
            f"{_json_path(name, path)}: {what} holds a NUL character (U+0000) at index "
            f"{text.index(chr(0))}, which jsonb cannot store; remove it (or encode the text, "
            "e.g. as base64)"
        )
    if (index := surrogate_at(text)) is not None:
        raise ValidationError(
            f"{_json_path(name, path)}: {what} holds a lone surrogate "
            f"(U+{ord(text[index]):04X}) at index {index}: {_SURROGATE_REASON}"
        )


def check_json_object(name: str, value: Any) -> None:
    """Raise ValidationError unless ``value`` is a JSON object that jsonb stores as given.

    Allowed: dict with str keys, list or tuple (stored as an array), str, int, finite float,
    bool, None; at most ``MAX_JSON_DEPTH`` levels deep. Refused, naming the path (e.g.
    ``payload['trade'][0]``, never a string's value): a key that is not a str (json.dumps would
    turn ``1`` into ``'1'`` and lose one of ``{1: 'a', '1': 'b'}``), NUL or a lone surrogate in
    a key or string, NaN and Infinity, a Decimal (convert it to str, which keeps it exact), and
    any other type. Walks the value with a stack, so no depth of input makes it recurse.
    """
    if not isinstance(value, dict):
        raise ValidationError(f"{name} must be a dict (a JSON object), not {type(value).__name__}")
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            _json_text(name, path, item, "the string")
        elif item is None or isinstance(item, bool | int):
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValidationError(
                    f"{_json_path(name, path)}={item!r} cannot be stored as JSON: NaN and "
                    "Infinity are not JSON numbers; store None or a string instead"
                )
        elif isinstance(item, dict | list | tuple):
            if len(path) >= MAX_JSON_DEPTH:
                raise ValidationError(
                    f"{_json_path(name, path[:3])}...: nested more than {MAX_JSON_DEPTH} levels "
                    "deep; flatten the value"
                )
            if isinstance(item, dict):
                for key, member in item.items():
                    if not isinstance(key, str):
                        raise ValidationError(
                            f"{_json_path(name, path)}: the key {_short(key)} is of type "
                            f"{type(key).__name__}; JSON object keys are str (json.dumps would "
                            "turn it into a string that may collide with another key): convert "
                            "the keys to str first"
                        )
                    _json_text(name, (*path, key), key, "the key")
                    stack.append((member, (*path, key)))
            else:
                stack.extend((member, (*path, index)) for index, member in enumerate(item))
        elif isinstance(item, Decimal):
            raise ValidationError(
                f"{_json_path(name, path)}: a Decimal cannot be stored as JSON exactly (a JSON "
                "number is read back as a binary float by most parsers); convert it to str, "
                "which keeps every digit"
            )
        else:
            raise ValidationError(
                f"{_json_path(name, path)}: a {type(item).__name__} cannot be stored as JSON; "
                "convert it first (a datetime to isoformat(), bytes to base64 text)"
            )


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _payload(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_json_object(attribute.name, value)


# the longest failure reason an event keeps (migration 0004's CHECK); longer ones are truncated
MAX_EVENT_ERROR = 2000


def _last_error(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= MAX_EVENT_ERROR):
        raise _fail(attribute.name, value, f"must be None or a str of 1 to {MAX_EVENT_ERROR} chars")
    if value is not None and ("\x00" in value or surrogate_at(value) is not None):
        # mark_failed escapes these; a value built by hand must not carry them either
        raise _fail(attribute.name, value, "must not hold a NUL or a lone surrogate")


@attrs.frozen
class QueuedEvent:
    """A chain event waiting in the queue (``processed_at`` None) or processed.

    ``attempts`` failed attempts (``events.mark_failed``) since it was queued or revived, the
    last one's ``last_error`` and ``last_failed_at``; it is not claimed before
    ``next_attempt_at`` (None: claimable now) and, once ``dead_at`` is set, it is a dead letter:
    never claimed until ``events.revive``.
    """

    id: int = attrs.field(validator=_ID)
    tx_hash: str = attrs.field(converter=_lower_hex, validator=_tx_hash)
    log_index: int = attrs.field(validator=_integer(0))
    block_number: int = attrs.field(validator=_integer(0, INT64_MAX))
    payload: dict[str, Any] = attrs.field(validator=_payload)
    created_at: datetime = attrs.field(converter=_to_utc, validator=_aware)
    processed_at: datetime | None = attrs.field(converter=_to_utc, validator=_aware)
    attempts: int = attrs.field(default=0, validator=_integer(0))
    last_error: str | None = attrs.field(default=None, validator=_last_error)
    last_failed_at: datetime | None = attrs.field(default=None, converter=_to_utc, validator=_aware)
    next_attempt_at: datetime | None = attrs.field(
        default=None, converter=_to_utc, validator=_aware
    )
    dead_at: datetime | None = attrs.field(default=None, converter=_to_utc, validator=_aware)


@attrs.frozen
class RecordedFill:
    """What ``fills.record`` did, or did the first time when the fill was stored already.

    A new fill: ``trade_id`` is its new id, ``execution`` the execution it started (if a whole
    share was waiting and none was pending) or None, ``already_stored`` False.

    A fill whose (tx_hash, log_index) was stored already with the same values (a retry after a
    lost reply): nothing changes; ``trade_id`` is the stored fill's id, ``already_stored`` True,
    and ``execution`` the lowest-id execution linked to the fill, read as it is now (its status
    may have moved on, e.g. COMPLETED or FAILED): the one the first call started when it started
    one, else the first execution the fill went into since, or None if it is in none yet.
    """

    trade_id: int = attrs.field(validator=_ID)
    execution: Execution | None = attrs.field(
        validator=attrs.validators.optional(attrs.validators.instance_of(Execution))
    )
    already_stored: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
