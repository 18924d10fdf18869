"""The checks of arguments that several operation modules share, each defined once.

Each raises ValidationError naming the argument and returns the value as the statement takes it.
Values of a model's fields are checked by the model itself (``persistence.validation``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from persistence.errors import ValidationError
from persistence.validation import INT64_MAX, TX_HASH, to_utc

__all__ = ["MAX_PAGE", "aware", "check_count", "check_id", "check_limit", "key", "page"]

# the most rows one page of a list returns
MAX_PAGE = 10_000


def check_limit(limit: Any, maximum: int = MAX_PAGE) -> int:
    """``limit`` if it is an int from 1 to ``maximum``: how many rows one read returns."""
    if type(limit) is not int or not 1 <= limit <= maximum:
        raise ValidationError(f"limit={limit!r}: must be an int from 1 to {maximum}")
    return limit


def page(limit: Any, after_id: Any) -> dict[str, int]:
    """The paging parameters of a list: ``limit`` rows after ``after_id`` (None: from the start)."""
    check_limit(limit)
    if after_id is not None and type(after_id) is not int:
        raise ValidationError(f"after_id={after_id!r}: must be an int")
    return {"limit": limit, "after_id": 0 if after_id is None else after_id}


def key(tx_hash: Any, log_index: Any) -> dict[str, Any]:
    """The lookup parameters, with the models' own rules, so that a lookup never misses on case."""
    if not isinstance(tx_hash, str) or not TX_HASH.fullmatch(normalised := tx_hash.lower()):
        raise ValidationError(f"tx_hash={tx_hash!r}: must be 0x followed by 64 hexadecimal digits")
    if type(log_index) is not int or log_index < 0:
        raise ValidationError(f"log_index={log_index!r}: must be an int >= 0")
    return {"tx_hash": normalised, "log_index": log_index}


def check_count(name: str, value: Any, *, minimum: int = 0) -> int:
    """``value`` if it is an int from ``minimum`` that a bigint holds (a count, a sequence, a
    position)."""
    if type(value) is not int or not minimum <= value <= INT64_MAX:
        raise ValidationError(f"{name}={value!r}: must be an int from {minimum} to {INT64_MAX}")
    return value


def check_id(name: str, value: Any) -> int:
    """``value`` if it is an id the database can hold (a bigint from 1)."""
    return check_count(name, value, minimum=1)


def aware(name: str, value: datetime | None) -> datetime | None:
    """``value`` in UTC (None stays None); ValidationError unless it is an aware datetime that
    UTC can hold."""
    if value is None:
        return None
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValidationError(f"{name}={value!r}: must be a timezone-aware datetime")
    return to_utc(name, value)
