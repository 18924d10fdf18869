"""The durable event queue: a table, and a claim is a row lock held by the worker's transaction.

A worker, inside one transaction: ``claim_next`` (the oldest unprocessed event, locked with
SKIP LOCKED so that workers never get the same event nor wait on each other), records what the
event means, ``mark_processed``, commits. A crash before the commit releases the lock and leaves
the event queued, with nothing of its processing written.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from persistence.converter import event_from_row
from persistence.errors import NotFound, ValidationError
from persistence.models import INT64_MAX, QueuedEvent, check_json_object
from persistence.operations import Query, Step, Steps
from persistence.operations.executions import check_id
from persistence.operations.trades import key
from persistence.queries import batching as sql


def _payload(payload: Any) -> str:
    # keys, depth, NUL, surrogates, NaN, types: refused with the path before json.dumps recurses
    check_json_object("payload", payload)
    try:
        # allow_nan=False: NaN and Infinity are not JSON, and the server would refuse them
        return json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:  # left: an int of more than 4300 digits
        raise ValidationError(
            f"payload cannot be stored as JSON: {exc}; convert such values first"
        ) from None


def _new_id(row: Any) -> int | None:
    return None if row is None else int(row[0])


def _event(row: Any) -> QueuedEvent | None:
    return None if row is None else event_from_row(row, QueuedEvent)


def _count(row: Any) -> int:
    return int(row[0])


def enqueue(
    tx_hash: str, log_index: int, block_number: int, payload: dict[str, Any]
) -> Query[int | None]:
    """Queue a chain event; its id, or None when (tx_hash, log_index) is queued already."""
    params = key(tx_hash, log_index)
    if type(block_number) is not int or not 0 <= block_number <= INT64_MAX:
        raise ValidationError(f"block_number={block_number!r}: must be an int >= 0")
    params.update(block_number=block_number, payload=_payload(payload))
    return Query(sql.ENQUEUE_EVENT, params, decode=_new_id)


def claim_next() -> Query[QueuedEvent | None]:
    """The oldest unprocessed event by (block_number, log_index), locked until the transaction
    ends, or None when none is left that another worker does not hold."""
    return Query(sql.CLAIM_NEXT_EVENT, decode=_event)


def mark_processed(event_id: int) -> Steps[None]:
    """Mark the event processed (with the transaction's commit). Marking it again is a no-op;
    an unknown id raises NotFound."""
    return Steps(_mark(check_id("id", event_id)), atomic=False)


def _mark(event_id: int) -> Generator[Step, Any, None]:
    marked = yield Query(sql.MARK_EVENT_PROCESSED, {"id": event_id})
    if marked is None and (yield Query(sql.SELECT_EVENT_BY_ID, {"id": event_id})) is None:
        raise NotFound(f"no queued event with id {event_id}")


def count_unprocessed() -> Query[int]:
    """How many events wait to be processed."""
    return Query(sql.COUNT_UNPROCESSED_EVENTS, decode=_count)
