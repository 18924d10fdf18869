"""The rules a value must meet to be stored: the models' validators and the checks of arguments.

Money and quantities are ``Decimal`` (a ``float`` is refused), checked against the precision and
scale they are stored with; more digits than fit is an error, never a rounding. Datetimes must be
timezone-aware and are normalised to UTC. Text must be something PostgreSQL can store (no NUL, no
lone surrogate). The ``*_field`` functions are attrs validators for ``models``; the ``check_*``
functions apply the same rules to an argument that is not a model's field.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

import attrs

from persistence.errors import ValidationError

__all__ = [
    "AMOUNT",
    "INT32_MAX",
    "INT64_MAX",
    "IO_RATIO",
    "PRICE_CENTS",
    "SURROGATE_REASON",
    "SYMBOL_PATTERN",
    "TX_HASH",
    "NumericSpec",
    "as_utc",
    "aware",
    "check_decimal",
    "check_symbol",
    "check_text",
    "decimal_field",
    "integer_field",
    "invalid",
    "lower_hex",
    "member",
    "secret_field",
    "surrogate_at",
    "symbol_field",
    "text_field",
    "to_decimal",
    "to_utc",
    "tx_hash_field",
    "visible_text_field",
]


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
TX_HASH = re.compile(r"0x[0-9a-f]{64}")


def invalid(name: str, value: Any, reason: str) -> ValidationError:
    """The error for ``name``: why ``value`` (shown, shortened) is refused."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValidationError(f"{name}={shown}: {reason}")


def check_decimal(name: str, value: Any, spec: NumericSpec, *, positive: bool = True) -> None:
    """Raise ValidationError unless ``value`` is a finite Decimal that fits ``spec`` exactly."""
    if not isinstance(value, Decimal):
        if isinstance(value, float):
            raise invalid(
                name,
                value,
                "a float is refused: binary floating point cannot hold most decimal amounts "
                "exactly; pass a Decimal built from a string, e.g. Decimal('1.1')",
            )
        raise invalid(name, value, f"must be a Decimal, not {type(value).__name__}")
    if not value.is_finite():
        raise invalid(name, value, "must be a finite number (not NaN or Infinity)")
    if positive and value <= 0:
        raise invalid(name, value, "must be greater than zero")
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
        raise invalid(
            name,
            value,
            f"has {decimals} decimal places, the column keeps {spec.scale}; round it explicitly "
            "(Decimal.quantize) if that is what you mean",
        )
    if whole > spec.precision - spec.scale:
        raise invalid(
            name,
            value,
            f"has {whole} digits before the point, the column holds at most "
            f"{spec.precision - spec.scale}",
        )


def decimal_field(spec: NumericSpec, *, positive: bool = True) -> Any:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            check_decimal(attribute.name, value, spec, positive=positive)

    return validate


def to_decimal(value: Any) -> Any:
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
    raise invalid(
        name,
        value,
        "is outside the range of datetime once converted to UTC (years 1 to 9999); pass a "
        "moment within that range",
    )


def as_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None and value.utcoffset() is not None:
        try:
            return value.astimezone(UTC)
        except OverflowError:
            return value  # left in its zone: aware, which knows the field's name, refuses it
    return value


def aware(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, datetime):
        raise invalid(attribute.name, value, f"must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise invalid(
            attribute.name,
            value,
            "must be timezone-aware: a naive datetime is ambiguous; attach a zone, e.g. "
            "datetime.now(UTC) or value.replace(tzinfo=UTC) for a UTC reading",
        )
    if value.tzinfo is not UTC:  # as_utc could not convert it
        to_utc(attribute.name, value)


# A lone surrogate (U+D800 to U+DFFF unpaired, e.g. from bytes decoded with surrogateescape or
# a JSON "\ud800" escape) is a str character that UTF-8 cannot encode: psycopg would raise a
# UnicodeEncodeError whose repr carries the whole string. Refused first, by position.
_SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_REASON = (
    "UTF-8 cannot encode a lone surrogate, so PostgreSQL cannot store it; it usually comes from "
    "bytes decoded with errors='surrogateescape' or a bad JSON escape: decode the source strictly"
)


def surrogate_at(value: str) -> int | None:
    """The index of the first lone surrogate in ``value``, or None when UTF-8 can encode it."""
    if value.isascii():
        return None
    found = _SURROGATE.search(value)
    return None if found is None else found.start()


def _check_str(name: str, value: Any, optional: bool, max_length: int) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise invalid(name, value, f"must be a str, not {type(value).__name__}")
    if not value or value != value.strip():
        raise invalid(name, value, "must be non-empty, without surrounding spaces")
    if "\x00" in value:
        raise invalid(name, value, "must not contain a NUL character")
    if (index := surrogate_at(value)) is not None:
        raise invalid(
            name,
            value,
            f"holds a lone surrogate (U+{ord(value[index]):04X}) at index {index}: "
            + SURROGATE_REASON,
        )
    if len(value) > max_length:
        raise invalid(name, value, f"is longer than {max_length} characters")


def text_field(*, optional: bool = False, max_length: int = 256) -> Any:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        _check_str(attribute.name, value, optional, max_length)

    return validate


def check_text(name: str, value: Any, *, optional: bool = False, max_length: int = 256) -> None:
    """Raise ValidationError unless ``value`` is text the models accept in a str field.

    The models' own validator, for arguments that are not a model's field (an order id given to
    ``update_status`` or ``executions.complete``), so that nothing a model refuses gets in.
    """
    _check_str(name, value, optional, max_length)


def secret_field(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    # like text_field, but the message never shows the value, nor any part or position of it
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValidationError(
            f"{attribute.name} must be a non-empty str without NUL characters (value not shown)"
        )
    if surrogate_at(value) is not None:
        raise ValidationError(
            f"{attribute.name} holds a lone surrogate (value not shown): {SURROGATE_REASON}"
        )


# Characters that show nothing or change how text around them looks: control (Cc), format (Cf,
# e.g. the zero-width space U+200B), surrogate (Cs), private use (Co), line and paragraph
# separators (Zl, Zp). Two symbols that differ only by one of them look the same.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def visible_text_field(*, max_length: int) -> Any:
    """``text_field``, and every character visible and in NFKC form: a full-width or otherwise
    compatibility form of a letter (U+FF21 for 'A') is a lookalike of the plain one."""
    text = text_field(max_length=max_length)

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        text(instance, attribute, value)
        if value.isascii() and value.isprintable():
            return
        for index, char in enumerate(value):
            if unicodedata.category(char) in _INVISIBLE:
                raise invalid(
                    attribute.name,
                    value,
                    f"holds an invisible or control character (U+{ord(char):04X}) at index "
                    f"{index}: it would make a lookalike of another symbol; remove it",
                )
        if unicodedata.normalize("NFKC", value) != value:
            raise invalid(
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
        raise invalid(name, value, f"must be a str, not {type(value).__name__}: {_SYMBOL_RULE}")
    if not value:
        raise invalid(name, value, f"must be non-empty: {_SYMBOL_RULE}")
    if len(value) > 16:
        raise invalid(name, value, f"is longer than 16 characters: {_SYMBOL_RULE}")
    index, char = next((i, c) for i, c in enumerate(value) if not _SYMBOL_FORM.match(c))
    if char == " ":
        described = "a space"
    elif char.isprintable():
        described = f"{char!r} (U+{ord(char):04X})"
    else:
        described = f"U+{ord(char):04X}"
    raise invalid(name, value, f"holds {described} at index {index}, not allowed: {_SYMBOL_RULE}")


def symbol_field(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_symbol(attribute.name, value)


def lower_hex(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def tx_hash_field(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not TX_HASH.fullmatch(value):
        raise invalid(attribute.name, value, "must be 0x followed by 64 hexadecimal digits")


def integer_field(minimum: int, maximum: int = INT32_MAX, *, optional: bool = False) -> Any:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None and (optional or attribute.name == "id"):
            return
        if type(value) is not int:
            raise invalid(attribute.name, value, f"must be an int, not {type(value).__name__}")
        if not minimum <= value <= maximum:
            raise invalid(attribute.name, value, f"must be between {minimum} and {maximum}")

    return validate


def member(kind: type[E], value: Any) -> E:
    if isinstance(value, kind):
        return value
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValidationError(
            f"{value!r} is not a valid {kind.__name__}; use one of {allowed}"
        ) from None
