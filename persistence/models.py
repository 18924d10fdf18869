"""Domain objects: frozen, slotted attrs classes, validated when built. They know nothing of SQL.

Money and quantities are ``Decimal`` (a ``float`` is refused), checked against the precision and
scale they are stored with; more digits than fit is an error, never a rounding. Datetimes must be
timezone-aware and are normalised to UTC. ``tx_hash`` is normalised to lower case. The rules
themselves (validators, converters, numeric specs) are in ``persistence.validation``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from enum import StrEnum
from typing import Any

import attrs

from persistence.errors import ValidationError

# The rules themselves live in persistence.validation and persistence.json_values; the names
# below were always importable from here (docs/usage.md names
# persistence.models.check_json_object) and stay so.
from persistence.json_values import MAX_JSON_DEPTH, check_json_object
from persistence.validation import (
    AMOUNT,
    INT32_MAX,
    INT64_MAX,
    IO_RATIO,
    PRICE_CENTS,
    SYMBOL_PATTERN,
    NumericSpec,
    as_utc,
    aware,
    check_decimal,
    check_symbol,
    decimal_field,
    integer_field,
    invalid,
    lower_hex,
    member,
    secret_field,
    surrogate_at,
    symbol_field,
    text_field,
    to_decimal,
    to_utc,
    tx_hash_field,
    visible_text_field,
)

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


# the most whole shares one execution holds (its column is an integer); more waits for the next
MAX_SHARES = INT32_MAX
_EXACT = Context(prec=100)


def _to_instruction(value: Any) -> Instruction:
    return member(Instruction, value)


def _to_status(value: Any) -> TradeStatus:
    return member(TradeStatus, value)


@attrs.frozen(kw_only=True)
class Trade:
    """One on-chain fill and its hedge at Schwab.

    ``id`` and ``created_at`` are set by the database on insert when left out; ``completed_at``
    is set when the trade leaves PENDING.
    """

    tx_hash: str = attrs.field(converter=lower_hex, validator=tx_hash_field)
    log_index: int = attrs.field(validator=integer_field(0))
    onchain_input_symbol: str = attrs.field(validator=visible_text_field(max_length=64))
    onchain_input_amount: Decimal = attrs.field(
        converter=to_decimal, validator=decimal_field(AMOUNT)
    )
    onchain_output_symbol: str = attrs.field(validator=visible_text_field(max_length=64))
    onchain_output_amount: Decimal = attrs.field(
        converter=to_decimal, validator=decimal_field(AMOUNT)
    )
    onchain_io_ratio: Decimal = attrs.field(converter=to_decimal, validator=decimal_field(IO_RATIO))
    onchain_price_per_share_cents: Decimal = attrs.field(
        converter=to_decimal, validator=decimal_field(PRICE_CENTS)
    )
    schwab_ticker: str = attrs.field(validator=symbol_field)
    schwab_instruction: Instruction = attrs.field(converter=_to_instruction)
    schwab_quantity: int = attrs.field(validator=integer_field(1))
    schwab_price_per_share_cents: Decimal | None = attrs.field(
        default=None, converter=to_decimal, validator=decimal_field(PRICE_CENTS)
    )
    status: TradeStatus = attrs.field(default=TradeStatus.PENDING, converter=_to_status)
    schwab_order_id: str | None = attrs.field(default=None, validator=text_field(optional=True))
    id: int | None = attrs.field(default=None, validator=integer_field(1, 2**63 - 1))
    created_at: datetime | None = attrs.field(default=None, converter=as_utc, validator=aware)
    completed_at: datetime | None = attrs.field(default=None, converter=as_utc, validator=aware)

    def __attrs_post_init__(self) -> None:
        if self.status is TradeStatus.PENDING:
            if self.completed_at is not None:
                raise invalid(
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

    access_token: str = attrs.field(validator=secret_field, repr=_hidden)
    access_token_fetched_at: datetime = attrs.field(converter=as_utc, validator=aware)
    refresh_token: str = attrs.field(validator=secret_field, repr=_hidden)
    refresh_token_fetched_at: datetime = attrs.field(converter=as_utc, validator=aware)

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

_ID = integer_field(1, INT64_MAX)
_OPTIONAL_ID = integer_field(1, INT64_MAX, optional=True)


def _to_execution_status(value: Any) -> ExecutionStatus:
    return member(ExecutionStatus, value)


@attrs.frozen
class Fill:
    """One on-chain fill of ``amount`` shares of ``symbol``: BUY adds to the long side.

    ``id`` and ``created_at`` are set by the database when the fill is recorded.
    """

    tx_hash: str = attrs.field(converter=lower_hex, validator=tx_hash_field)
    log_index: int = attrs.field(validator=integer_field(0))
    symbol: str = attrs.field(validator=symbol_field)
    amount: Decimal = attrs.field(converter=to_decimal, validator=decimal_field(AMOUNT))
    direction: Instruction = attrs.field(converter=_to_instruction)
    price_usdc: Decimal = attrs.field(converter=to_decimal, validator=decimal_field(AMOUNT))
    id: int | None = attrs.field(default=None, validator=_ID)
    created_at: datetime | None = attrs.field(default=None, converter=as_utc, validator=aware)


@attrs.frozen
class Execution:
    """A hedge at Schwab of whole ``shares``; PENDING until completed (with its order id and
    price) or failed (its shares go back to the symbol's accumulator)."""

    id: int = attrs.field(validator=_ID)
    symbol: str = attrs.field(validator=symbol_field)
    shares: int = attrs.field(validator=integer_field(1, MAX_SHARES))
    direction: Instruction = attrs.field(converter=_to_instruction)
    status: ExecutionStatus = attrs.field(converter=_to_execution_status)
    order_id: str | None = attrs.field(validator=text_field(optional=True))
    price_cents: Decimal | None = attrs.field(
        converter=to_decimal, validator=decimal_field(PRICE_CENTS)
    )
    executed_at: datetime | None = attrs.field(converter=as_utc, validator=aware)
    created_at: datetime = attrs.field(converter=as_utc, validator=aware)

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

    symbol: str = attrs.field(validator=symbol_field)
    accumulated_long: Decimal = attrs.field(
        converter=to_decimal, validator=decimal_field(AMOUNT, positive=False)
    )
    accumulated_short: Decimal = attrs.field(
        converter=to_decimal, validator=decimal_field(AMOUNT, positive=False)
    )
    pending_execution_id: int | None = attrs.field(validator=_OPTIONAL_ID)
    last_updated: datetime = attrs.field(converter=as_utc, validator=aware)


@attrs.frozen
class ExecutionLink:
    """``contributed_shares`` of fill ``trade_id`` went into execution ``execution_id``."""

    trade_id: int = attrs.field(validator=_ID)
    execution_id: int = attrs.field(validator=_ID)
    contributed_shares: Decimal = attrs.field(converter=to_decimal, validator=decimal_field(AMOUNT))


def _payload(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_json_object(attribute.name, value)


# the longest failure reason an event keeps (migration 0004's CHECK); longer ones are truncated
MAX_EVENT_ERROR = 2000


def _last_error(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= MAX_EVENT_ERROR):
        raise invalid(
            attribute.name, value, f"must be None or a str of 1 to {MAX_EVENT_ERROR} chars"
        )
    if value is not None and ("\x00" in value or surrogate_at(value) is not None):
        # mark_failed escapes these; a value built by hand must not carry them either
        raise invalid(attribute.name, value, "must not hold a NUL or a lone surrogate")


@attrs.frozen
class QueuedEvent:
    """A chain event waiting in the queue (``processed_at`` None) or processed.

    ``attempts`` failed attempts (``events.mark_failed``) since it was queued or revived, the
    last one's ``last_error`` and ``last_failed_at``; it is not claimed before
    ``next_attempt_at`` (None: claimable now) and, once ``dead_at`` is set, it is a dead letter:
    never claimed until ``events.revive``.
    """

    id: int = attrs.field(validator=_ID)
    tx_hash: str = attrs.field(converter=lower_hex, validator=tx_hash_field)
    log_index: int = attrs.field(validator=integer_field(0))
    block_number: int = attrs.field(validator=integer_field(0, INT64_MAX))
    payload: dict[str, Any] = attrs.field(validator=_payload)
    created_at: datetime = attrs.field(converter=as_utc, validator=aware)
    processed_at: datetime | None = attrs.field(converter=as_utc, validator=aware)
    attempts: int = attrs.field(default=0, validator=integer_field(0))
    last_error: str | None = attrs.field(default=None, validator=_last_error)
    last_failed_at: datetime | None = attrs.field(default=None, converter=as_utc, validator=aware)
    next_attempt_at: datetime | None = attrs.field(default=None, converter=as_utc, validator=aware)
    dead_at: datetime | None = attrs.field(default=None, converter=as_utc, validator=aware)


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
