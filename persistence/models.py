"""Domain objects: frozen, slotted attrs classes, validated when built. They know nothing of SQL.

Money and quantities are ``Decimal`` (a ``float`` is refused), checked against the precision and
scale they are stored with; more digits than fit is an error, never a rounding. Datetimes must be
timezone-aware and are normalised to UTC. ``tx_hash`` is normalised to lower case.
"""

from __future__ import annotations

import re
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
    "MAX_SHARES",
    "PRICE_CENTS",
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
    "io_ratio",
    "price_per_share_cents",
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


def _to_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None and value.utcoffset() is not None:
        return value.astimezone(UTC)
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
    # like _text, but the message never shows the value
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValidationError(
            f"{attribute.name} must be a non-empty str without NUL characters (value not shown)"
        )


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
    onchain_input_symbol: str = attrs.field(validator=_text(max_length=64))
    onchain_input_amount: Decimal = attrs.field(
        converter=_to_decimal, validator=_decimal_field(AMOUNT)
    )
    onchain_output_symbol: str = attrs.field(validator=_text(max_length=64))
    onchain_output_amount: Decimal = attrs.field(
        converter=_to_decimal, validator=_decimal_field(AMOUNT)
    )
    onchain_io_ratio: Decimal = attrs.field(
        converter=_to_decimal, validator=_decimal_field(IO_RATIO)
    )
    onchain_price_per_share_cents: Decimal = attrs.field(
        converter=_to_decimal, validator=_decimal_field(PRICE_CENTS)
    )
    schwab_ticker: str = attrs.field(validator=_text(max_length=16))
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

_SYMBOL = _text(max_length=16)
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


def _payload(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, dict):
        raise _fail(
            attribute.name, value, f"must be a dict (a JSON object), not {type(value).__name__}"
        )


# the longest failure reason an event keeps (migration 0004's CHECK); longer ones are truncated
MAX_EVENT_ERROR = 2000


def _last_error(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= MAX_EVENT_ERROR):
        raise _fail(attribute.name, value, f"must be None or a str of 1 to {MAX_EVENT_ERROR} chars")


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
