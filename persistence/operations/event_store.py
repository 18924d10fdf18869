"""The event store's operations (migration 0007), as data: no I/O.

``append`` is one round trip (the ``append_events`` function checks the expected sequence,
numbers and positions the events, all or nothing). Reads of the global order (``read_all``) are
gap-free: they stop below the horizon of transactions still running (``queries.event_store``).
``project`` is a plan of steps that a driver (``persistence.event_store``) runs in one
transaction, calling the user's handler where the plan says :class:`Handle`.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from json.encoder import c_encode_basestring, c_make_encoder  # type: ignore[attr-defined]
from typing import Any

from persistence.errors import (
    ConcurrencyConflict,
    EventsCompacted,
    InvalidTransition,
    ValidationError,
)
from persistence.event_models import (
    MAX_AGGREGATE_ID,
    MAX_AGGREGATE_TYPE,
    MAX_CHECKPOINT_NAME,
    NewEvent,
    RecordedEvent,
    Snapshot,
)
from persistence.operations import ALL, COUNT, NONE, Operation, Query, Repeat, Step, Steps
from persistence.operations.checks import check_count, check_limit
from persistence.queries import event_store as sql
from persistence.validation import check_text

__all__ = [
    "MAX_APPEND",
    "MAX_READ",
    "Handle",
    "Reset",
    "advance",
    "append",
    "append_alone",
    "compact",
    "get",
    "last_sequence",
    "load",
    "load_snapshot",
    "project",
    "read_all",
    "readable_after",
    "save_snapshot",
]

# The most events one append takes (each transaction has room for 2**20 positions).
MAX_APPEND = 100_000
# The most events one read_all (or one project batch) returns.
MAX_READ = 100_000


def _aggregate(aggregate_type: Any, aggregate_id: Any) -> dict[str, Any]:
    check_text("aggregate_type", aggregate_type, max_length=MAX_AGGREGATE_TYPE)
    check_text("aggregate_id", aggregate_id, max_length=MAX_AGGREGATE_ID)
    return {"aggregate_type": aggregate_type, "aggregate_id": aggregate_id}


def _name(name: Any) -> str:
    check_text("name", name, max_length=MAX_CHECKPOINT_NAME)
    return str(name)


# json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False), by Python's C
# encoder: JSONEncoder.encode wraps it in two Python calls, about 0.4 of the 2.3 µs a bot's
# payload takes. A new one per call: its circular-reference markers are the call's own (shared
# markers would see another thread's object as a cycle). allow_nan=False: NaN and Infinity
# are not JSON and the server would refuse them.
_DEFAULT = json.JSONEncoder().default


def _dumps(value: Any) -> str:
    encode = c_make_encoder({}, _DEFAULT, c_encode_basestring, None, ":", ",", False, False, False)
    try:
        return "".join(encode(value, 0))
    except (TypeError, ValueError, RecursionError) as exc:  # changed after it was built
        raise ValidationError(
            f"an event's payload cannot be stored as JSON: {exc}; build events from values "
            "check_json_object accepts and do not change them afterwards"
        ) from None


def _checked(
    aggregate_type: Any, aggregate_id: Any, events: Any, expected_sequence: Any
) -> tuple[dict[str, Any], list[NewEvent]]:
    params = _aggregate(aggregate_type, aggregate_id)
    expected = check_count("expected_sequence", expected_sequence)
    # a list first: the ABC's isinstance costs more than the rest of these checks
    if type(events) is not list and (
        isinstance(events, NewEvent) or not isinstance(events, Sequence)
    ):
        raise ValidationError(
            f"events must be a list of NewEvent, not {type(events).__name__}: wrap one event "
            "in a list"
        )
    if not events:
        raise ValidationError("events is empty: append at least one NewEvent")
    if len(events) > MAX_APPEND:
        raise ValidationError(f"{len(events)} events: append at most {MAX_APPEND} at a time")
    for index, event in enumerate(events):
        if type(event) is not NewEvent:
            raise ValidationError(
                f"events[{index}] is a {type(event).__name__}, not a NewEvent: build it with "
                "NewEvent(event_type, payload, ...)"
            )
    params["expected_sequence"] = expected
    return params, list(events)


def _conflict(params: dict[str, Any], actual: int | None) -> ConcurrencyConflict:
    aggregate = f"{params['aggregate_type']} {params['aggregate_id']!r}"
    expected = params["expected_sequence"]
    if actual == expected:  # read after the append: a concurrent one filled the gap meanwhile
        where = f"was not at sequence {expected} when the append ran (it is now)"
    else:
        where = f"is at sequence {actual}, not {expected}"
    return ConcurrencyConflict(
        f"{aggregate} {where}: reload it and decide again (nothing was written)", actual
    )


def _recorded(
    params: dict[str, Any], event: NewEvent, sequence: int, position: int, recorded_at: Any
) -> RecordedEvent:
    return RecordedEvent(
        params["aggregate_type"],
        params["aggregate_id"],
        sequence,
        event.event_type,
        event.event_version,
        event.payload,
        event.metadata,
        position,
        recorded_at,
    )


def append(
    aggregate_type: str,
    aggregate_id: str,
    events: Sequence[NewEvent],
    *,
    expected_sequence: int,
) -> Query[list[RecordedEvent]]:
    """Append ``events`` to the aggregate, all or nothing; the events as recorded.

    ``expected_sequence`` is the last sequence the writer saw (0: the aggregate must be new).
    When the aggregate's last sequence (after compaction: at least its snapshot's) is another,
    ConcurrencyConflict with ``actual_sequence`` is raised and nothing is written. Only such a
    clash is a conflict: a timeout, a lost connection or a refused value raise their own error
    (DatabaseUnavailable, ValidationError) and the caller must not read them as "already there".
    Inside a transaction, a clash found before writing leaves the transaction usable; one lost
    to a concurrent writer at the last moment aborts it, like any failed statement.
    """
    params, checked = _checked(aggregate_type, aggregate_id, events, expected_sequence)
    rows = [[e.event_type, e.event_version, e.payload, e.metadata] for e in checked]
    params["events"] = _dumps(rows)

    def recorded(result: Any) -> list[RecordedEvent]:
        if not result or result[0][1] is None:
            raise _conflict(params, int(result[0][0]) if result else None)
        return [
            _recorded(params, event, sequence, position, recorded_at)
            for event, (_, position, sequence, recorded_at) in zip(checked, result, strict=True)
        ]

    return Query(sql.APPEND_EVENTS, params, fetch=ALL, decode=recorded)


def append_alone(
    aggregate_type: str,
    aggregate_id: str,
    events: Sequence[NewEvent],
    *,
    expected_sequence: int,
) -> Operation[list[RecordedEvent]]:
    # ``append`` as a transaction of its own (db.event_store.append, in autocommit): one event
    # after others goes in one INSERT (APPEND_NEXT); several, or a new aggregate's first,
    # through append_events(). Its docstring is append's: it is what db.event_store.append shows.
    if (
        (type(events) is list or isinstance(events, Sequence)) and len(events) != 1
    ) or expected_sequence == 0:
        return append(aggregate_type, aggregate_id, events, expected_sequence=expected_sequence)
    params, (event,) = _checked(aggregate_type, aggregate_id, events, expected_sequence)
    params["event_type"] = event.event_type
    params["event_version"] = event.event_version
    params["payload"] = _dumps(event.payload)
    params["metadata"] = _dumps(event.metadata)
    return Steps(_append_one(params, event), atomic=False)


def _append_one(
    params: dict[str, Any], event: NewEvent
) -> Generator[Step, Any, list[RecordedEvent]]:
    expected = params["expected_sequence"]
    try:
        row = yield Query(sql.APPEND_NEXT, params, savepoint=True)
        if row is None:  # no event there: did compaction delete it?
            row = yield Query(sql.APPEND_AFTER_SNAPSHOT, params, savepoint=True)
    except ConcurrencyConflict:  # a stored or concurrent event holds the next sequence
        row = None
    if row is None:
        # a statement of its own: its snapshot shows a winner the insert waited for
        raise _conflict(params, int((yield Query(sql.LAST_SEQUENCE, params))[0]))
    position, recorded_at = row
    return [_recorded(params, event, expected + 1, position, recorded_at)]


append_alone.__doc__ = append.__doc__


def _events(rows: Any) -> list[RecordedEvent]:
    return [RecordedEvent(*row) for row in rows]


def load(
    aggregate_type: str, aggregate_id: str, *, after_sequence: int = 0
) -> Steps[list[RecordedEvent]]:
    """The aggregate's events after ``after_sequence``, by sequence ([] when none).

    Raises EventsCompacted when compaction deleted events after ``after_sequence``: load the
    snapshot first (``load_snapshot``) and then the events after its ``last_sequence``.
    """
    params = _aggregate(aggregate_type, aggregate_id)
    params["after_sequence"] = check_count("after_sequence", after_sequence)
    return Steps(_load(params), atomic=False)


def _load(params: dict[str, Any]) -> Generator[Step, Any, list[RecordedEvent]]:
    events = _events((yield Query(sql.LOAD_EVENTS, params, fetch=ALL)))
    after = params["after_sequence"]
    if events and events[0].sequence == after + 1:
        return events  # the usual case: one round trip
    if events:
        last = events[0].sequence - 1  # sequences are contiguous but for compaction
    else:
        row = yield Query(sql.COMPACTED_BEFORE, params)
        if row is None:
            return events
        last = int(row[0])
    raise EventsCompacted(
        f"{params['aggregate_type']} {params['aggregate_id']!r}: events {after + 1} to {last} "
        f"were compacted into its snapshot; load_snapshot() first, then load(..., "
        f"after_sequence=snapshot.last_sequence)"
    )


def _int(row: Any) -> int:
    return int(row[0])


def last_sequence(aggregate_type: str, aggregate_id: str) -> Query[int]:
    """The aggregate's last sequence: 0 when it has none (after compaction, at least its
    snapshot's ``last_sequence``). The ``expected_sequence`` of the next append."""
    return Query(sql.LAST_SEQUENCE, _aggregate(aggregate_type, aggregate_id), decode=_int)


def _page(after_position: Any, limit: Any) -> dict[str, Any]:
    limit = check_limit(limit, MAX_READ)
    return {"after_position": check_count("after_position", after_position), "limit": limit}


def read_all(
    *, after_position: int = 0, limit: int = 1000, aggregate_type: str | None = None
) -> Query[list[RecordedEvent]]:
    """Up to ``limit`` events after ``after_position`` in the global order (ascending
    ``position``), of every aggregate or of one ``aggregate_type``.

    Gap-free: an event not returned yet never commits at or below a position returned, so a
    reader that keeps the last position it saw skips nothing. Events of transactions still
    running, and those of any transaction that started after the oldest write transaction still
    running on the server, are returned once it ends (docs/event-store.md).
    """
    params = _page(after_position, limit)
    if aggregate_type is None:
        return Query(sql.READ_ALL, params, fetch=ALL, decode=_events)
    check_text("aggregate_type", aggregate_type, max_length=MAX_AGGREGATE_TYPE)
    params["aggregate_type"] = aggregate_type
    return Query(sql.READ_ALL_OF_TYPE, params, fetch=ALL, decode=_events)


def _exists(row: Any) -> bool:
    return bool(row[0])


def readable_after(after_position: int) -> Query[bool]:
    """Whether ``read_all(after_position=...)`` would return an event now."""
    params = {"after_position": check_count("after_position", after_position)}
    return Query(sql.EVENTS_READABLE_AFTER, params, decode=_exists)


def save_snapshot(snapshot: Snapshot) -> Steps[bool]:
    """Store ``snapshot``; False when one at or past its ``last_sequence`` is stored already.

    A snapshot with a newer ``snapshot_version`` replaces one at the same sequence (a schema
    bump). A snapshot past the aggregate's last sequence is refused with ValidationError.
    """
    if type(snapshot) is not Snapshot:
        raise ValidationError(f"snapshot must be a Snapshot, not {type(snapshot).__name__}")
    params = _aggregate(snapshot.aggregate_type, snapshot.aggregate_id)
    params.update(
        last_sequence=snapshot.last_sequence,
        snapshot_version=snapshot.snapshot_version,
        payload=_dumps(snapshot.payload),
    )
    # False may be a retry finding its own snapshot stored: confirmed like any repeat
    return Steps(_save(params), atomic=False, stored=_not_saved)


def _not_saved(saved: bool) -> bool:
    return not saved


def _save(params: dict[str, Any]) -> Generator[Step, Any, bool]:
    if (yield Query(sql.SAVE_SNAPSHOT, params)) is not None:
        return True
    last = int((yield Query(sql.LAST_SEQUENCE, params))[0])
    if params["last_sequence"] > last:
        raise ValidationError(
            f"snapshot.last_sequence={params['last_sequence']} is past the last sequence of "
            f"{params['aggregate_type']} {params['aggregate_id']!r} ({last}): snapshot a state "
            "that was appended"
        )
    return False


def _snapshot(row: Any) -> Snapshot | None:
    return None if row is None else Snapshot(*row)


def load_snapshot(aggregate_type: str, aggregate_id: str) -> Query[Snapshot | None]:
    """The aggregate's stored snapshot, or None."""
    params = _aggregate(aggregate_type, aggregate_id)
    return Query(sql.SELECT_SNAPSHOT, params, decode=_snapshot)


def compact(aggregate_type: str, aggregate_id: str) -> Query[int]:
    """Delete the events the aggregate's snapshot covers; how many were deleted.

    The last sequence is unchanged and appends continue after it. A projection that has not
    read the deleted events yet never will: compact only behind every checkpoint
    (docs/event-store.md).
    """
    params = _aggregate(aggregate_type, aggregate_id)
    return Query(sql.COMPACT_EVENTS, params, fetch=COUNT)


# --- checkpoints ---------------------------------------------------------------------------


def _position(row: Any) -> int:
    return 0 if row is None else int(row[0])


def get(name: str) -> Query[int]:
    """The checkpoint's position: the last event its projection handled; 0 when new."""
    return Query(sql.SELECT_CHECKPOINT, {"name": _name(name)}, decode=_position)


def advance(name: str, position: int) -> Steps[None]:
    """Move the checkpoint forward to ``position`` (creating it). The same position is a
    no-op; a lower one raises ConcurrencyConflict (``actual_sequence``: the stored position)."""
    params = {"name": _name(name), "position": check_count("position", position)}
    repeat = Repeat()
    return Steps(_advance(params, repeat), atomic=False, stored=repeat)


def _advance(params: dict[str, Any], repeat: Repeat) -> Generator[Step, Any, None]:
    if (yield Query(sql.ADVANCE_CHECKPOINT, params)) is not None:
        return
    stored = _position((yield Query(sql.SELECT_CHECKPOINT, params)))
    repeat.found()  # the same position: a no-op, maybe a retry (a lower one raises below)
    if stored > params["position"]:
        raise ConcurrencyConflict(
            f"checkpoint {params['name']!r} is at position {stored}: it cannot move back to "
            f"{params['position']} (another projector advanced it?)",
            stored,
        )


# --- projections ---------------------------------------------------------------------------


class Handle:
    """A step of ``project``: call the handler with ``events`` in the transaction."""

    __slots__ = ("events",)

    def __init__(self, events: list[RecordedEvent]) -> None:
        self.events = events


class Reset:
    """A step of ``project``: a new version; call the projection's reset in the transaction."""

    __slots__ = ()


Plan = Generator[Step | Handle | Reset, Any, int]


def project(name: str, *, limit: int = 500, version: int | None = None) -> Plan:
    """The plan of one projection batch, for a driver to run in one transaction: lock the
    checkpoint (creating it), rebuild on a new ``version``, read the events after it, Handle
    them, advance; returns how many were handled."""
    params = {"name": _name(name), **_page(0, limit)}
    if version is not None:
        check_count("version", version)
    return _project(params, version)


def _project(params: dict[str, Any], version: int | None) -> Plan:
    row = yield Query(sql.LOCK_CHECKPOINT, params)
    if row is None:
        row = yield Query(sql.CREATE_CHECKPOINT, params)
    if row is None:  # another projector created it meanwhile: wait for it like any holder
        row = yield Query(sql.LOCK_CHECKPOINT, params)
    position, stored = int(row[0]), row[1]
    if version is None and stored is not None:
        # code from before the versions (found by a probe): its effects would mix into the
        # read model a versioned projector rebuilt
        raise InvalidTransition(
            f"projection {params['name']!r} is at version {stored}, this projector passes "
            f"none: pass version={stored}, or stop it if it is the code from before the rebuild"
        )
    if version is not None and stored != version:
        if stored is not None and stored > version:
            raise InvalidTransition(
                f"projection {params['name']!r} is at version {stored}, this projector at "
                f"{version}: stop the older projector (a newer one rebuilt the read model)"
            )
        yield Reset()
        yield Query(sql.RESET_CHECKPOINT, {**params, "version": version}, fetch=NONE)
        position = 0
    params["after_position"] = position
    events = _events((yield Query(sql.READ_ALL, params, fetch=ALL)))
    if not events:
        return 0
    yield Handle(events)
    yield Query(sql.SET_CHECKPOINT, {**params, "position": events[-1].position}, fetch=NONE)
    return len(events)
