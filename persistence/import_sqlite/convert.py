"""The conversion rules: a SQLite value to an exact Decimal or an aware UTC datetime, or a
named refusal. Every layout converts with these, and nothing here reads or writes a database.

- A REAL is a double. Its value is the shortest decimal that reads back as the same double
  (``repr``). If that has more decimal places than the column keeps, it is rounded half-even to
  the column's scale, and kept only if the rounded value is within one ulp of the double's exact
  binary value (its own resolution); otherwise the row is reported (a loss). Integers, and
  numbers stored as text that parse, are exact. Text that is not a number, Infinity and NaN are
  reported.
- Timestamps: ``YYYY-MM-DD HH:MM:SS`` and ISO 8601 with ``T``, fractions up to nanoseconds, ``Z``
  or an offset; no offset means UTC. Digits below the microsecond are rounded to the nearest
  microsecond (as PostgreSQL itself does) and each such row is noted in the report. Unix epoch
  numbers are read by magnitude: seconds, milliseconds, microseconds or nanoseconds.
- Every row is then built as the library's model (:func:`to_model`): its own validation.

docs/migrating-from-sqlite.md gives the same rules with examples.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any

from persistence.errors import ValidationError
from persistence.models import NumericSpec

__all__ = [
    "EXACT",
    "ROUNDED",
    "Invalid",
    "shown",
    "to_datetime",
    "to_decimal",
    "to_model",
    "validation_column",
    "whole",
]

SECRET_COLUMNS = ("access_token", "refresh_token")
# exact arithmetic on the values this import meets: sums of a million 18-decimal amounts, and
# a double's exact binary value (up to 1074 digits, but its ulp comparisons need far fewer)
EXACT = Context(prec=200)
ROUNDED = "rounded to the microsecond (PostgreSQL keeps microseconds)"
_TIMESTAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)"
    r"(?:\.(?P<fraction>\d{1,9}))?\s*(?P<zone>Z|z|[+-]\d{2}(?::?\d{2})?)?"
)


class Invalid(Exception):
    """A value that cannot be moved: its column, the value as read (None if unknown), why."""

    def __init__(self, column: str, value: Any, reason: str) -> None:
        self.column, self.value, self.reason = column, value, reason


def shown(column: str, value: Any) -> str:
    """A value as the report shows it: its repr, shortened; tokens never."""
    if column in SECRET_COLUMNS:
        return "(not shown)"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def to_decimal(column: str, value: Any, spec: NumericSpec) -> Decimal | None:
    """The exact Decimal for a REAL, INTEGER or TEXT value, fitted to ``spec`` without loss."""
    if value is None:
        return None
    if isinstance(value, bool | bytes | bytearray):
        raise Invalid(column, value, "is not a number")
    if isinstance(value, int):
        exact = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid(column, value, "is not finite (Infinity or NaN)")
        exact = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            exact = Decimal(value.strip())
        except InvalidOperation:
            raise Invalid(column, value, "is text that is not a number") from None
        if not exact.is_finite():
            raise Invalid(column, value, "is not finite (Infinity or NaN)")
    else:
        raise Invalid(column, value, f"is a {type(value).__name__}, not a number")
    exponent = exact.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > spec.scale:
        rounded = exact.quantize(Decimal(1).scaleb(-spec.scale), ROUND_HALF_EVEN, EXACT)
        # rounding is allowed within the double's own resolution: at most one ulp from its
        # exact binary value (the shortest repr already is the fewest digits that read back)
        if not isinstance(value, float) or abs(EXACT.subtract(rounded, Decimal(value))) > Decimal(
            math.ulp(value)
        ):
            raise Invalid(
                column,
                value,
                f"has more than {spec.scale} decimal places and rounding would move it by more "
                "than the double's resolution (one ulp)",
            )
        exact = rounded
    whole = exact.adjusted() + 1
    if whole > spec.precision - spec.scale:
        raise Invalid(
            column,
            value,
            f"is too large: at most {spec.precision - spec.scale} digits before the point",
        )
    return exact


def _epoch(column: str, value: float | int | Decimal) -> datetime:
    magnitude = abs(float(value))
    for low, high, scale in (
        (1e9, 1e11, 1),
        (1e12, 1e14, 10**3),
        (1e15, 1e17, 10**6),
        (1e18, 1e20, 10**9),
    ):
        if low <= magnitude < high:
            micros = (Decimal(repr(value)) if isinstance(value, float) else Decimal(value)) * (
                Decimal(10**6) / scale
            )
            whole = int(micros.to_integral_value(ROUND_HALF_EVEN))
            return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=whole)
    raise Invalid(
        column,
        value,
        "is a number that is not a plausible Unix time (seconds, ms, µs or ns after 2001)",
    )


def to_datetime(column: str, value: Any) -> tuple[datetime | None, bool]:
    """An aware UTC datetime, and whether sub-microsecond digits were rounded."""
    if value is None:
        return None, False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _epoch(column, value), False
    if not isinstance(value, str):
        raise Invalid(column, value, "is not a timestamp")
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return _epoch(column, Decimal(text)), False
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise Invalid(column, value, "is not a timestamp this import reads")
    clock = match["time"] if match["time"].count(":") == 2 else match["time"] + ":00"
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{clock}")
    except ValueError:
        raise Invalid(column, value, "is not a valid date and time") from None
    zone = match["zone"]
    if zone in (None, "Z", "z"):
        tz: timezone = UTC
    else:
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        tz = timezone(offset if zone[0] == "+" else -offset)
    fraction = match["fraction"] or ""
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    micros, rest = divmod(nanos, 1000)
    if rest > 500 or (rest == 500 and micros % 2):
        micros += 1
    moment = (moment + timedelta(microseconds=micros)).replace(tzinfo=tz).astimezone(UTC)
    return moment, rest != 0


def validation_column(error: ValidationError, default: str) -> str:
    """The column a model's ValidationError names (``column=...`` or ``column: ...``)."""
    match = re.match(r"(\w+)[=:]", str(error))
    return match.group(1) if match else default


def to_model(model: Any, *args: Any, **fields: Any) -> Any:
    """The model, or Invalid naming the column its validation refused (value unknown: None)."""
    try:
        return model(*args, **fields)
    except ValidationError as error:
        raise Invalid(validation_column(error, "row"), None, str(error)) from None


def whole(column: str, value: Any) -> int:
    """An INTEGER column's value; a REAL that is a whole number is accepted as one."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if type(value) is not int:
        raise Invalid(column, value, "must be a whole number")
    return value
