"""The event store's values: NewEvent (to append), RecordedEvent (stored), Snapshot.

Frozen, slotted attrs classes like the other models. ``NewEvent`` and ``Snapshot`` validate
themselves when built (the rules of ``persistence.validation``),
so an append or a save checks only that it got them; ``RecordedEvent`` is built from stored
rows, which the database's constraints already checked. Payloads are not frozen: do not change
a dict after building the event from it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from persistence.json_values import check_json_object
from persistence.validation import (
    INT64_MAX,
    as_utc,
    aware,
    integer_field,
    text_field,
)

__all__ = [
    "MAX_AGGREGATE_ID",
    "MAX_AGGREGATE_TYPE",
    "MAX_CHECKPOINT_NAME",
    "MAX_EVENT_TYPE",
    "MAX_EVENT_VERSION",
    "NewEvent",
    "RecordedEvent",
    "Snapshot",
]

# The longest text each field takes (migration 0007's CHECKs hold the same numbers): an
# aggregate id fits a UUID, a "txhash:log_index" or a symbol with room to spare.
MAX_AGGREGATE_TYPE = 100
MAX_AGGREGATE_ID = 256
MAX_EVENT_TYPE = 200
MAX_EVENT_VERSION = 32
MAX_CHECKPOINT_NAME = 200


def _json(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_json_object(attribute.name, value)


@attrs.frozen
class NewEvent:
    """An event to append: its type, payload (a JSON object), payload version and metadata.

    ``payload`` and ``metadata`` are dicts that jsonb stores as given: str keys; str, int (any
    size, exact), finite float, bool, None, lists and dicts, at most 64 levels deep. Refused
    with ValidationError: NaN and Infinity, NUL, lone surrogates, non-str keys, and Decimal
    (convert it to str, which keeps every digit).
    """

    event_type: str = attrs.field(validator=text_field(max_length=MAX_EVENT_TYPE))
    payload: dict[str, Any] = attrs.field(validator=_json)
    event_version: str = attrs.field(
        default="1", validator=text_field(max_length=MAX_EVENT_VERSION)
    )
    metadata: dict[str, Any] = attrs.field(factory=dict, validator=_json)


@attrs.frozen
class RecordedEvent:
    """A stored event: where it belongs (aggregate and sequence), what it says, and its place
    in the global order (``position``); ``recorded_at`` is aware, in UTC."""

    aggregate_type: str
    aggregate_id: str
    sequence: int
    event_type: str
    event_version: str
    payload: dict[str, Any]
    metadata: dict[str, Any]
    position: int
    recorded_at: datetime


@attrs.frozen
class Snapshot:
    """An aggregate's state after ``last_sequence``, in the version of its schema.

    ``taken_at`` is set by the database when saved (None on a snapshot not yet saved).
    """

    aggregate_type: str = attrs.field(validator=text_field(max_length=MAX_AGGREGATE_TYPE))
    aggregate_id: str = attrs.field(validator=text_field(max_length=MAX_AGGREGATE_ID))
    last_sequence: int = attrs.field(validator=integer_field(1, INT64_MAX))
    snapshot_version: int = attrs.field(validator=integer_field(0, INT64_MAX))
    payload: dict[str, Any] = attrs.field(validator=_json)
    taken_at: datetime | None = attrs.field(default=None, converter=as_utc, validator=aware)
