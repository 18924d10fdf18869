"""The bot's JSON (layout 3) as jsonb holds it: what jsonb cannot hold is named, never altered.

:func:`check_json` parses a payload or metadata text the way jsonb would store it and returns
why jsonb cannot hold it unchanged (``None`` when it can), plus the numbers jsonb spells
differently (same value); most texts take its fast path (:func:`as_written`: one C parse and
one C encode), the rest the full parse below. :func:`canonical` parses a text into a structure
two sides can be compared with: objects as dicts (jsonb keeps no key order), numbers as their
exact decimal in the spelling jsonb gives them back, so the verification compares values and
their scale.

The rules:

- text that is not JSON (or has ``NaN``/``Infinity``, which Python accepts): refused;
- a ``\\u0000`` in any string or key (jsonb refuses it), a lone surrogate escape (``\\ud800``;
  jsonb refuses it, and it is not Unicode): refused;
- a key twice in one object (jsonb keeps the last, silently): refused;
- a number beyond numeric's range (more than 131072 digits before the point, or 16383 after):
  refused;
- a number jsonb spells differently, with the same value: ``1.0e2`` is stored as ``100``,
  ``-0`` as ``0``: imported, and noted (the value, and so any reader's, is the same). Integers
  of any size and decimals with trailing zeros (``1.50``) are stored as they are written.
"""

from __future__ import annotations

import json
import re
import threading
from decimal import Decimal
from json.encoder import c_encode_basestring, c_make_encoder  # type: ignore[attr-defined]
from typing import Any

__all__ = ["Number", "as_written", "canonical", "check_json", "same_json"]

_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_BEFORE, _MAX_AFTER = 131_072, 16_383


class Number(str):
    """A JSON number in jsonb's spelling: a str, so that 1 and 1.0 differ, as jsonb keeps them."""

    __slots__ = ()


class _Refused(Exception):
    pass


_PLAIN = re.compile(r"-?(?:0|[1-9][0-9]{0,80})(?:\.[0-9]{1,80})?")


# the numbers the parse in progress found spelled otherwise by jsonb (one import: one thread)
_respelled = threading.local()


def _number(text: str) -> Number:
    if _PLAIN.fullmatch(text) and not (text[0] == "-" and not text.strip("-0.")):
        return Number(text)  # the common case: jsonb keeps it as written (a fast path)
    value = Decimal(text)
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # JSON has no NaN or Infinity numbers
    if value.adjusted() >= _MAX_BEFORE or -exponent > _MAX_AFTER:
        raise _Refused(f"has the number {text[:40]}, beyond what jsonb's numeric holds")
    if value.is_zero():
        value = abs(value)  # numeric has no negative zero
    stored = Number(format(value, "f"))
    found = getattr(_respelled, "found", None)
    if stored != text and found is not None:
        found.append((text, str(stored)))
    return stored


def _constant(text: str) -> Any:
    raise _Refused(f"has {text}, which is not JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise _Refused(f"has the key {twice[:40]!r} twice in one object (jsonb keeps the last)")
    return obj


# one decoder: json.loads with hooks would build a new one per call
_DECODER = json.JSONDecoder(
    parse_float=_number, parse_int=_number, parse_constant=_constant, object_pairs_hook=_object
)


def _parse(text: str) -> Any:
    return _DECODER.decode(text)


def _strings(value: Any) -> Any:
    if isinstance(value, Number):
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class _Slow(ValueError):
    """A number the fast path leaves to the full check."""


def _plain_float(text: str) -> float:
    """A float jsonb keeps as written (no exponent, not a negative zero), else _Slow."""
    value = float(text)
    if "e" in text or "E" in text or (not value and text[0] == "-"):
        raise _Slow(text)
    return value


_FAST_SCAN = json.JSONDecoder(parse_float=_plain_float).scan_once  # type: ignore[attr-defined]
_ENCODERS = {
    # Python's own encoders, in C, for the two spellings of a JSON text Python and serde write
    spaced: c_make_encoder(
        None,
        None,
        c_encode_basestring,
        None,
        ": " if spaced else ":",
        ", " if spaced else ",",
        False,
        False,
        False,
    )
    for spaced in (True, False)
}


def as_written(text: Any, objects_only: bool = True) -> bool:
    """The fast path: whether ``text`` is, character for character, what Python's encoder
    writes (spaced, or compact as serde_json writes it) for the value it parses to, with
    plain numbers only and no ``\\u`` escape. Such a text has no duplicate key (the
    re-encoded object would lack one), no NaN (refused by the encoder), no escaped NUL or lone
    surrogate, and no number jsonb spells otherwise; everything else takes the full check."""
    if type(text) is not str or "\\u" in text:
        return False
    try:
        value, end = _FAST_SCAN(text, 0)
        if end != len(text) or (objects_only and type(value) is not dict):
            return False
        return "".join(_ENCODERS['": ' in text](value, 0)) == text
    except (StopIteration, ValueError, RecursionError, OverflowError):
        return False


def check_json(
    text: Any, *, objects_only: bool = True, fast: bool = True
) -> tuple[str | None, list[tuple[str, str]]]:
    """Why jsonb cannot hold ``text`` as it is (None if it can), and each number jsonb would
    spell differently, as (written, stored). Events and snapshots hold objects only.
    ``fast=False`` skips the fast path (:func:`as_written`; the tests compare both)."""
    if fast and (text == "{}" or as_written(text, objects_only)):
        return None, []
    if not isinstance(text, str):
        return f"is {type(text).__name__}, not JSON text", []
    respelled: list[tuple[str, str]] = []
    _respelled.found = respelled
    try:
        value = _parse(text)
    except _Refused as refused:
        return str(refused), []
    except (ValueError, RecursionError) as error:
        return f"is not JSON ({str(error)[:80]})", []
    finally:
        _respelled.found = None
    if objects_only and not isinstance(value, dict):
        return "is not a JSON object", []
    if "\\u" in text:  # escapes are the only way a NUL or a lone surrogate gets into valid JSON
        for string in _strings(value):
            if "\x00" in string:
                return "has \\u0000 in a string, which jsonb cannot hold", []
            if _SURROGATE.search(string):
                return "has a lone surrogate escape (\\ud800-\\udfff), not Unicode", []
    return None, respelled


# numbers kept as written, no checks: for comparing texts already checked
_AS_WRITTEN = json.JSONDecoder(parse_float=Number, parse_int=Number)


_SCAN = _AS_WRITTEN.scan_once  # type: ignore[attr-defined]  # the C scanner itself: decode's Python wrapper costs as much


def same_json(held: str, written: str) -> bool:
    """Whether the texts are the same JSON by value and number spelling (PostgreSQL's ``held``
    and the file's ``written``): equal as written, else equal once jsonb's respelling
    (``1.0e2`` as ``100``) is applied to both."""
    if held == written:
        return True
    try:
        value, end = _SCAN(held, 0)
        other, other_end = _SCAN(written, 0)
        if value == other and end == len(held) and other_end == len(written):
            return True
    except (StopIteration, ValueError, RecursionError):
        pass  # whitespace around the value, or worse: the full decoders below say
    if _AS_WRITTEN.decode(held) == _AS_WRITTEN.decode(written):
        return True
    return bool(canonical(held) == canonical(written))


def canonical(text: str) -> Any:
    """``text`` parsed for comparison: dicts, lists, str, :class:`Number`, bools and None."""
    return _parse(text)
