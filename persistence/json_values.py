"""Whether a value is a JSON object that jsonb stores as given: the event store's payloads,
metadata and snapshots (``persistence.event_models``)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from persistence.errors import ValidationError
from persistence.validation import SURROGATE_REASON, surrogate_at

__all__ = ["MAX_JSON_DEPTH", "check_json_object"]

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
            f"(U+{ord(text[index]):04X}) at index {index}: {SURROGATE_REASON}"
        )


def _flat_and_clean(value: dict[Any, Any]) -> bool:
    """The common payload, checked in one pass over its text: str keys, and values that are
    str, int, bool or None, with no NUL and no lone surrogate. False: walk it (and say why)."""
    try:
        parts = ["".join(value)]  # TypeError: a key is not a str
    except TypeError:
        return False
    for member in value.values():
        kind = type(member)
        if kind is str:
            parts.append(member)
        elif kind is not int and kind is not bool and member is not None:
            return False
    text = "".join(parts)
    return "\x00" not in text and surrogate_at(text) is None


def check_json_object(name: str, value: Any) -> None:
    """Raise ValidationError unless ``value`` is a JSON object that jsonb stores as given.

    Allowed: dict with str keys, list or tuple (stored as an array), str, int, finite float,
    bool, None; at most ``MAX_JSON_DEPTH`` levels deep. Refused, naming the path (e.g.
    ``payload['trade'][0]``, never a string's value): a key that is not a str (json.dumps would
    turn ``1`` into ``'1'`` and lose one of ``{1: 'a', '1': 'b'}``), NUL or a lone surrogate in
    a key or string, NaN and Infinity, a Decimal (convert it to str, which keeps it exact), and
    any other type. Walks the value with a stack, so no depth of input makes it recurse.
    """
    if type(value) is dict and _flat_and_clean(value):
        return
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
