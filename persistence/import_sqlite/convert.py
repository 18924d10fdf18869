"""Conversions shared by both layouts' imports: SQLite values to exact Decimals and UTC times.

The rules are the module docstring of ``persistence.import_sqlite``.
"""

from __future__ import annotations

import math
import re
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from persistence.errors import PersistenceError, ValidationError
from persistence.models import NumericSpec

SECRET_COLUMNS = ("access_token", "refresh_token")
_EXACT = Context(prec=200)
_TIMESTAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)"
    r"(?:\.(?P<fraction>\d{1,9}))?\s*(?P<zone>Z|z|[+-]\d{2}(?::?\d{2})?)?"
)


class ImportFailed(PersistenceError):
    """The import was refused or did not verify; nothing was written."""


class SourceDamaged(ImportFailed):
    """The SQLite file is damaged (corrupt pages) and cannot be read whole; nothing was written."""


# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB
_DAMAGE_CODES = (11, 26)


def source_error(path: Path, exc: sqlite3.DatabaseError) -> ImportFailed:
    """Our error for a failure reading the SQLite file at ``path``; nothing was written."""
    reason = str(exc).strip() or type(exc).__name__
    if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in _DAMAGE_CODES:
        return SourceDamaged(
            f"{path} is damaged: {reason}; nothing was imported. Recover what SQLite still can "
            f"into a new file (`sqlite3 {path} .recover | sqlite3 recovered.db`) and import "
            "that, after checking it"
        )
    return ImportFailed(f"reading {path} failed: {reason}; nothing was imported")


class _RowError(Exception):
    def __init__(self, column: str, value: Any, reason: str) -> None:
        self.column, self.value, self.reason = column, value, reason


def _shown(column: str, value: Any) -> str:
    if column in SECRET_COLUMNS:
        return "(not shown)"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def to_decimal(column: str, value: Any, spec: NumericSpec) -> Decimal | None:
    """The exact Decimal for a REAL, INTEGER or TEXT value, fitted to ``spec`` without loss."""
    if value is None:
        return None
    if isinstance(value, bool | bytes | bytearray):
        raise _RowError(column, value, "is not a number")
    if isinstance(value, int):
        exact = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _RowError(column, value, "is not finite (Infinity or NaN)")
        exact = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            exact = Decimal(value.strip())
        except InvalidOperation:
            raise _RowError(column, value, "is text that is not a number") from None
        if not exact.is_finite():
            raise _RowError(column, value, "is not finite (Infinity or NaN)")
    else:
        raise _RowError(column, value, f"is a {type(value).__name__}, not a number")
    exponent = exact.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > spec.scale:
        rounded = exact.quantize(Decimal(1).scaleb(-spec.scale), ROUND_HALF_EVEN, _EXACT)
        # rounding is allowed within the double's own resolution: at most one ulp from its
        # exact binary value (the shortest repr already is the fewest digits that read back)
        if not isinstance(value, float) or abs(_EXACT.subtract(rounded, Decimal(value))) > Decimal(
            math.ulp(value)
        ):
            raise _RowError(
                column,
                value,
                f"has more than {spec.scale} decimal places and rounding would move it by more "
                "than the double's resolution (one ulp)",
            )
        exact = rounded
    whole = exact.adjusted() + 1
    if whole > spec.precision - spec.scale:
        raise _RowError(
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
    raise _RowError(
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
        raise _RowError(column, value, "is not a timestamp")
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return _epoch(column, Decimal(text)), False
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise _RowError(column, value, "is not a timestamp this import reads")
    clock = match["time"] if match["time"].count(":") == 2 else match["time"] + ":00"
    try:
        moment = datetime.fromisoformat(f"{match['date']}T{clock}")
    except ValueError:
        raise _RowError(column, value, "is not a valid date and time") from None
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


def _validation_column(error: ValidationError, default: str) -> str:
    match = re.match(r"(\w+)[=:]", str(error))
    return match.group(1) if match else default


def _read_only(path: Path) -> sqlite3.Connection:
    """The SQLite file, opened so that nothing can write to it."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
