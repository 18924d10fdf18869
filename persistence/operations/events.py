"""The durable event queue: a table, and a claim is a row lock held by the worker's transaction.

A worker, inside one transaction: ``claim_next`` (the oldest unprocessed event, locked with
SKIP LOCKED so that workers never get the same event nor wait on each other), records what the
event means, ``mark_processed``, commits. A crash before the commit releases the lock and leaves
the event queued, with nothing of its processing written.

A handler that fails runs in a savepoint of that transaction; the worker then records the
attempt with ``mark_failed`` in the transaction itself, which commits it with the claim
(docs/usage.md). A failed event waits out a backoff (doubling from ``event_retry_delay``, at
most ``EVENT_RETRY_DELAY_CAP``) while the events behind it are claimed; after
``event_max_attempts`` failures it is a dead letter, never claimed until ``revive``.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

from persistence.config import (
    DEFAULT_EVENT_MAX_ATTEMPTS,
    DEFAULT_EVENT_RETRY_DELAY,
    EVENT_RETRY_DELAY_CAP,
)
from persistence.converter import event_from_row
from persistence.errors import InvalidTransition, NotFound, ValidationError
from persistence.json_values import check_json_object
from persistence.models import MAX_EVENT_ERROR, QueuedEvent
from persistence.operations import (
    ALL,
    Query,
    Repeat,
    Step,
    Steps,
    integer,
    new_id,
    nothing_new,
)
from persistence.operations.checks import check_id, key, page
from persistence.queries import events as sql
from persistence.validation import INT32_MAX, INT64_MAX


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


def _event(row: Any) -> QueuedEvent | None:
    return None if row is None else event_from_row(row)


def enqueue(
    tx_hash: str, log_index: int, block_number: int, payload: dict[str, Any]
) -> Query[int | None]:
    """Queue a chain event; its id, or None when (tx_hash, log_index) is queued already."""
    params = key(tx_hash, log_index)
    if type(block_number) is not int or not 0 <= block_number <= INT64_MAX:
        raise ValidationError(f"block_number={block_number!r}: must be an int >= 0")
    params.update(block_number=block_number, payload=_payload(payload))
    return Query(sql.ENQUEUE_EVENT, params, decode=new_id, stored=nothing_new)


def claim_next() -> Query[QueuedEvent | None]:
    """The oldest unprocessed event by (block_number, log_index), locked until the transaction
    ends, or None when none is left that another worker does not hold."""
    return Query(sql.CLAIM_NEXT_EVENT, decode=_event)


def mark_processed(event_id: int) -> Steps[None]:
    """Mark the event processed (with the transaction's commit). Marking it again is a no-op;
    an unknown id raises NotFound."""
    repeat = Repeat()
    return Steps(_mark(check_id("id", event_id), repeat), atomic=False, stored=repeat)


def _mark(event_id: int, repeat: Repeat) -> Generator[Step, Any, None]:
    if (yield Query(sql.MARK_EVENT_PROCESSED, {"id": event_id})) is not None:
        return
    if (yield Query(sql.SELECT_EVENT_BY_ID, {"id": event_id})) is None:
        raise NotFound(f"no queued event with id {event_id}")
    repeat.found()


def count_unprocessed() -> Query[int]:
    """How many events wait to be processed: claimable now or after their backoff. Dead letters
    are not counted (they wait for a person, not a worker): see ``count_dead_letters``."""
    return Query(sql.COUNT_UNPROCESSED_EVENTS, decode=integer)


def _reason(reason: Any) -> str:
    if not isinstance(reason, str):
        raise ValidationError(
            f"reason must be a str saying why the attempt failed, not {type(reason).__name__}"
        )
    if not reason.strip():
        raise ValidationError(
            "reason is empty: say why the attempt failed, e.g. f'{type(exc).__name__}: {exc}' "
            "(str(exc) alone is empty for an exception raised without a message)"
        )
    # What PostgreSQL text cannot hold (NUL, a lone surrogate) is escaped rather than refused:
    # the reason is usually str(exc) of whatever failed, and refusing it would leave the
    # attempt unrecorded, the very loop this exists to break.
    text = reason.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > MAX_EVENT_ERROR:
        # bounded in the table too: a traceback per attempt must not grow a row without limit
        text = text[: MAX_EVENT_ERROR - 1] + "\u2026"
    return text


def _policy(max_attempts: Any, retry_delay: Any) -> dict[str, Any]:
    if type(max_attempts) is not int or not 1 <= max_attempts <= INT32_MAX:
        raise ValidationError(
            f"max_attempts={max_attempts!r}: must be an int from 1 to {INT32_MAX}"
        )
    if (
        isinstance(retry_delay, bool)
        or not isinstance(retry_delay, int | float)
        or not 0 <= retry_delay <= EVENT_RETRY_DELAY_CAP
    ):
        raise ValidationError(
            f"retry_delay={retry_delay!r}: must be a number of seconds from 0 to "
            f"{EVENT_RETRY_DELAY_CAP:g}"
        )
    return {
        "max_attempts": max_attempts,
        "retry_delay": float(retry_delay),
        "retry_cap": EVENT_RETRY_DELAY_CAP,
    }


def mark_failed(
    event_id: int,
    reason: str,
    *,
    max_attempts: int = DEFAULT_EVENT_MAX_ATTEMPTS,
    retry_delay: float = DEFAULT_EVENT_RETRY_DELAY,
) -> Steps[QueuedEvent]:
    """Record a failed attempt to process the event; the event as it is now.

    ``attempts`` goes up by one, ``last_error`` is ``reason`` (a non-empty str; beyond
    2000 characters it is truncated, and a NUL or lone surrogate is escaped) and
    ``last_failed_at`` the time. The event is not claimed again before ``next_attempt_at``:
    ``retry_delay`` seconds after its first failure, doubling with each one, at most
    ``EVENT_RETRY_DELAY_CAP`` (0: claimable again at once, by the next transaction). The
    attempt that reaches ``max_attempts`` makes it a dead letter (``dead_at`` set): never
    claimed again, listed by ``dead_letters``, put back by ``revive``. On a repository, both
    default to the database's settings (``event_max_attempts``, ``event_retry_delay``).

    Raises NotFound for an unknown id and InvalidTransition for a processed event (its
    processing committed: a failure can no longer be recorded). In a transaction that holds the
    claim, the attempt commits with it: run the handler in a savepoint (``tx.transaction()``)
    so that its rollback leaves the claim and this record alone (docs/usage.md).
    """
    params = {
        "id": check_id("id", event_id),
        "reason": _reason(reason),
        **_policy(max_attempts, retry_delay),
    }
    return Steps(_fail(params), atomic=False)


def _fail(params: dict[str, Any]) -> Generator[Step, Any, QueuedEvent]:
    # a step's result is its row, undecoded: the generator decodes what it returns
    failed = yield Query(sql.MARK_EVENT_FAILED, params)
    if failed is not None:
        return event_from_row(failed)
    stored = yield Query(sql.SELECT_EVENT_BY_ID, {"id": params["id"]})
    raise _not_live(params["id"], _event(stored))


def _not_live(event_id: int, event: QueuedEvent | None) -> Exception:
    if event is None:
        return NotFound(f"no queued event with id {event_id}")
    return InvalidTransition(
        f"event {event_id} was processed at {event.processed_at:%Y-%m-%d %H:%M:%S%z}: "
        "a processed event is final; it cannot fail or be revived"
    )


def revive(event_id: int) -> Steps[QueuedEvent]:
    """Put a dead letter back in the queue; the event as it is now.

    Its attempts start again from 0 and it is claimable at once, in its place by
    (block_number, log_index); ``last_error`` and ``last_failed_at`` stay, as history. An
    event that is not a dead letter is returned unchanged (reviving twice is harmless).
    Raises NotFound for an unknown id and InvalidTransition for a processed event.
    """
    repeat = Repeat()
    return Steps(_revive(check_id("id", event_id), repeat), atomic=False, stored=repeat)


def _revive(event_id: int, repeat: Repeat) -> Generator[Step, Any, QueuedEvent]:
    revived = yield Query(sql.REVIVE_EVENT, {"id": event_id})
    if revived is not None:
        return event_from_row(revived)
    event = _event((yield Query(sql.SELECT_EVENT_BY_ID, {"id": event_id})))
    if event is None or event.processed_at is not None:
        raise _not_live(event_id, event)
    repeat.found()
    return event


def _events(rows: Any) -> list[QueuedEvent]:
    return [event_from_row(row) for row in rows]


def dead_letters(*, limit: int = 100, after_id: int | None = None) -> Query[list[QueuedEvent]]:
    """One page of dead letters by ascending id; pass the last id as ``after_id`` for the next.

    A dead letter leaves the list when it is revived, or when it is marked processed (dealt
    with by hand: ``tx.events.mark_processed``).
    """
    statement, params = sql.list_dead_letters(**page(limit, after_id))
    return Query(statement, params, fetch=ALL, decode=_events)


def count_dead_letters() -> Query[int]:
    """How many dead letters wait for a person (to revive them, or to mark them processed)."""
    return Query(sql.COUNT_DEAD_LETTERS, decode=integer)
