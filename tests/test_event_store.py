"""The event store (issue #27): append, load, last_sequence, read_all; conflicts and failures.

Every behavioural test runs on both APIs (the ``db`` fixture).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persistence import (
    ConcurrencyConflict,
    Conflict,
    DatabaseUnavailable,
    NewEvent,
    PersistenceError,
    RecordedEvent,
    Snapshot,
    ValidationError,
)
from persistence.operations import event_store as event_store_ops
from tests.event_store_support import event, read_everything, store_url, stored_rows

__all__ = ["store_url"]  # the fixture, used by name

pytestmark = pytest.mark.usefixtures("store_url")


def test_append_then_load_gives_the_events_back(db: Any) -> None:
    huge = 2**200 + 1
    events = [
        NewEvent("Opened", {"owner": "zoë ☃", "limit": huge}, metadata={"by": "test"}),
        NewEvent("Deposited", {"amount": "12.3400", "ratio": 0.1, "tags": [1, None, True]}, "2"),
    ]
    recorded = db.event_store.append("Account", "a-1", events, expected_sequence=0)
    assert [e.sequence for e in recorded] == [1, 2]
    assert recorded[0].position < recorded[1].position
    assert recorded[0].recorded_at.utcoffset() is not None
    loaded = db.event_store.load("Account", "a-1")
    assert loaded == recorded
    assert loaded[0].payload["limit"] == huge and type(loaded[0].payload["limit"]) is int
    assert loaded[1].event_version == "2" and loaded[0].metadata == {"by": "test"}
    assert db.event_store.last_sequence("Account", "a-1") == 2
    assert db.event_store.last_sequence("Account", "nobody") == 0
    assert db.event_store.load("Account", "nobody") == []
    assert db.event_store.load("Account", "a-1", after_sequence=1) == recorded[1:]
    more = db.event_store.append("Account", "a-1", [event(n=3)], expected_sequence=2)
    assert more[0].sequence == 3 and more[0].position > recorded[1].position


def test_a_wrong_expectation_is_a_conflict_with_the_actual_sequence(
    db: Any, store_url: str
) -> None:
    db.event_store.append("Account", "a-1", [event(), event()], expected_sequence=0)
    for expected in (0, 1, 3):
        with pytest.raises(ConcurrencyConflict, match="nothing was written") as raised:
            db.event_store.append("Account", "a-1", [event(x=expected)], expected_sequence=expected)
        assert raised.value.actual_sequence == 2
    assert [row[2] for row in stored_rows(store_url)] == [1, 2]


def test_one_event_appended_alone_checks_the_snapshot_after_compaction(
    db: Any, store_url: str
) -> None:
    """db.event_store.append of one event is one INSERT after the event at the expected
    sequence (queries.APPEND_NEXT), or, when compaction deleted it, after the snapshot ending
    there (APPEND_AFTER_SNAPSHOT); for 0, append_events(), which finds the snapshot."""
    db.event_store.append("A", "c", [event(), event(), event()], expected_sequence=0)
    assert db.event_store.save_snapshot(Snapshot("A", "c", 3, 0, {"n": 3}))
    assert db.event_store.compact("A", "c") == 3
    for expected in (0, 2, 4):
        with pytest.raises(ConcurrencyConflict, match="nothing was written") as raised:
            db.event_store.append("A", "c", [event()], expected_sequence=expected)
        assert raised.value.actual_sequence == 3
    (fourth,) = db.event_store.append("A", "c", [event()], expected_sequence=3)
    (fifth,) = db.event_store.append("A", "c", [event()], expected_sequence=4)
    assert (fourth.sequence, fifth.sequence) == (4, 5)
    # each the first event of a transaction of its own: (transaction id << 20) + 0
    assert fourth.position % 2**20 == 0 and fifth.position % 2**20 == 0
    assert fourth.position < fifth.position
    assert [row[2] for row in stored_rows(store_url)] == [4, 5]
    assert db.event_store.load("A", "c", after_sequence=3) == [fourth, fifth]


def test_a_clash_found_before_writing_leaves_the_transaction_usable(db: Any) -> None:
    with db.transaction() as tx:
        tx.event_store.append("Account", "a-1", [event()], expected_sequence=0)
        with pytest.raises(ConcurrencyConflict):
            tx.event_store.append("Account", "a-1", [event()], expected_sequence=0)
        tx.event_store.append("Account", "a-1", [event()], expected_sequence=1)
    assert db.event_store.last_sequence("Account", "a-1") == 2


def test_a_writer_that_loses_the_race_gets_a_conflict_with_the_winners_sequence(
    db: Any,
) -> None:
    """The clash the up-front check cannot see: both writers checked before either wrote."""
    outcome: list[Any] = []
    with db.transaction() as winner:
        winner.event_store.append(
            "Account", "a-1", [event(), event(), event()], expected_sequence=0
        )

        def lose() -> None:
            try:
                outcome.append(
                    db.event_store.append("Account", "a-1", [event()], expected_sequence=0)
                )
            except Exception as exc:
                outcome.append(exc)

        loser = threading.Thread(target=lose)
        loser.start()
        time.sleep(0.3)  # the loser waits on the winner's uncommitted key
        assert not outcome
    loser.join(10)
    (result,) = outcome
    assert isinstance(result, ConcurrencyConflict), result
    assert result.actual_sequence == 3
    assert db.event_store.last_sequence("Account", "a-1") == 3


@pytest.mark.parametrize(
    ("stored", "snapshot_before", "expected"),
    [(8, 8, 7), (8, 5, 5), (3, None, 0)],
    ids=["after_the_event", "after_the_old_snapshot", "first_event"],
)
def test_a_stale_append_during_a_compaction_is_a_conflict_and_writes_nothing(
    db: Any, store_url: str, stored: int, snapshot_before: int | None, expected: int
) -> None:
    """A compaction (a snapshot at the last event, then compact, in one transaction) still
    open while a writer appends with a stale expectation, one entry of the one-event append
    each: the next event after it, after an older snapshot, the first. Found by a probe: each
    was written (a second event 8, 6 or 1, hidden behind the new snapshot) while the append
    checked only the event at the expected sequence, or the snapshot: its unique check waited
    for the compaction to delete the next event and then found it gone."""
    db.event_store.append("A", "a", [event(n=n) for n in range(stored)], expected_sequence=0)
    if snapshot_before is not None:
        assert db.event_store.save_snapshot(Snapshot("A", "a", snapshot_before, 0, {}))
    outcome: list[Any] = []

    def stale() -> None:
        try:
            outcome.append(db.event_store.append("A", "a", [event()], expected_sequence=expected))
        except Exception as exc:
            outcome.append(exc)

    with db.transaction() as compaction:
        compaction.event_store.save_snapshot(Snapshot("A", "a", stored, 0, {}))
        assert compaction.event_store.compact("A", "a") > 0
        writer = threading.Thread(target=stale)
        writer.start()
        time.sleep(0.3)  # the writer decides while the compaction is open (or waits for it)
    writer.join(10)
    (result,) = outcome
    assert isinstance(result, ConcurrencyConflict), result
    assert result.actual_sequence == stored
    assert stored_rows(store_url) == []
    assert db.event_store.last_sequence("A", "a") == stored
    assert db.event_store.load("A", "a", after_sequence=stored) == []


def _append_as(db: Any, how: str, expected: int) -> Any:
    """One event alone (queries.APPEND_NEXT), two (append_events), or one in a transaction."""
    if how == "alone":
        return db.event_store.append("A", "a", [event()], expected_sequence=expected)
    if how == "several":
        return db.event_store.append("A", "a", [event(), event()], expected_sequence=expected)
    with db.transaction() as tx:
        return tx.event_store.append("A", "a", [event()], expected_sequence=expected)


@pytest.mark.parametrize("how", ["alone", "several", "in_a_transaction"])
@pytest.mark.parametrize("before", ["events", "nothing", "compacted"])
def test_a_racing_append_is_a_conflict_when_the_winner_compacts_its_own_event(
    db: Any, store_url: str, how: str, before: str
) -> None:
    """Two writers expect the same sequence; the winner appends the next event, snapshots and
    compacts it in one transaction. The loser's check runs before that commit, so its unique
    check waits for the winner and then finds the winner's event gone (deleted in the same
    commit): without more, a second event is stored behind the snapshot, where load() never
    returns it. After events, the lock on the last one stops it (the compaction's deletion
    waits for it, or it for the deletion; one event alone before the fifth pass, several or
    in a transaction before migration 0011). With no event to lock, a new aggregate or one
    compacted whole, the check after the insert does (migration 0012; one event alone after
    a compaction locks the snapshot instead)."""
    expected = 0 if before == "nothing" else 3
    if before != "nothing":
        db.event_store.append("A", "a", [event(), event(), event()], expected_sequence=0)
    if before == "compacted":
        assert db.event_store.save_snapshot(Snapshot("A", "a", 3, 0, {}))
        assert db.event_store.compact("A", "a") == 3
    outcome: list[Any] = []

    def lose() -> None:
        try:
            outcome.append(_append_as(db, how, expected))
        except Exception as exc:
            outcome.append(exc)

    with db.transaction() as winner:
        winner.event_store.append("A", "a", [event()], expected_sequence=expected)
        winner.event_store.save_snapshot(Snapshot("A", "a", expected + 1, 0, {}))
        assert winner.event_store.compact("A", "a") == (
            1 if before == "compacted" else expected + 1
        )
        loser = threading.Thread(target=lose)
        loser.start()
        time.sleep(0.3)
    loser.join(10)
    (result,) = outcome
    assert isinstance(result, ConcurrencyConflict), result
    assert result.actual_sequence == expected + 1
    assert stored_rows(store_url) == []
    assert db.event_store.last_sequence("A", "a") == expected + 1


@pytest.mark.parametrize("how", ["alone", "several", "in_a_transaction"])
def test_a_conflict_reports_the_last_sequence_read_after_a_racing_compaction(
    db: Any, how: str
) -> None:
    """The winner takes the aggregate from 3 to 5 and compacts it up to 4 in one commit: the
    loser's check waited on event 3, found it deleted, and read the snapshot (4), a sequence
    that was never the aggregate's last; it reports the one read afresh (found by a probe; 4
    before migration 0012 for several events and in a transaction)."""
    db.event_store.append("A", "a", [event(), event(), event()], expected_sequence=0)
    outcome: list[Any] = []

    def lose() -> None:
        try:
            outcome.append(_append_as(db, how, 3))
        except Exception as exc:
            outcome.append(exc)

    with db.transaction() as winner:
        winner.event_store.append("A", "a", [event(), event()], expected_sequence=3)
        winner.event_store.save_snapshot(Snapshot("A", "a", 4, 0, {}))
        assert winner.event_store.compact("A", "a") == 4
        loser = threading.Thread(target=lose)
        loser.start()
        time.sleep(0.3)
    loser.join(10)
    (result,) = outcome
    assert isinstance(result, ConcurrencyConflict), result
    assert result.actual_sequence == 5


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
@pytest.mark.parametrize("before", ["nothing", "events"])
def test_an_append_in_a_transaction_above_read_committed_is_refused(
    db: Any, store_url: str, level: str, before: str
) -> None:
    """At REPEATABLE READ or SERIALIZABLE every statement of append_events() shares the
    transaction's snapshot, so its checks could not see a racing writer's commit: an append
    into a new aggregate whose first event another writer appended, snapshotted and compacted
    meanwhile was stored behind the snapshot (found by a probe). Refused with what to do, on
    every aggregate alike; nothing written."""
    if before == "events":
        db.event_store.append("A", "a", [event()], expected_sequence=0)
    expected = 0 if before == "nothing" else 1
    with pytest.raises(PersistenceError) as raised, db.transaction() as tx:
        tx.connection.execute(f"SET TRANSACTION ISOLATION LEVEL {level}")
        tx.event_store.append("A", "a", [event()], expected_sequence=expected)
    assert not isinstance(raised.value, (Conflict, DatabaseUnavailable))
    assert f"appends at READ COMMITTED, not {level}" in str(raised.value)
    assert "append outside this transaction" in str(raised.value)
    assert len(stored_rows(store_url)) == expected


@pytest.mark.parametrize("how", ["alone", "several", "in_a_transaction"])
def test_an_expectation_ahead_of_the_aggregate_is_a_conflict_not_a_gap(
    db: Any, store_url: str, how: str
) -> None:
    """Expecting 5 of an aggregate at 3 would store 6 after a gap (a mutation probe turned the
    function's check into `>` and no test saw it)."""
    db.event_store.append("A", "a", [event(), event(), event()], expected_sequence=0)
    with pytest.raises(ConcurrencyConflict) as raised:
        _append_as(db, how, 5)
    assert raised.value.actual_sequence == 3
    assert [row[2] for row in stored_rows(store_url)] == [1, 2, 3]


def test_a_newer_snapshot_version_never_moves_the_snapshot_back(db: Any) -> None:
    """A higher snapshot_version replaces a snapshot at the same sequence, never one after it:
    after compaction the aggregate could not load any more (a mutation probe dropped the guard
    and no test saw it)."""
    db.event_store.append("A", "a", [event(), event(), event()], expected_sequence=0)
    assert db.event_store.save_snapshot(Snapshot("A", "a", 3, 0, {"n": 3}))
    assert db.event_store.compact("A", "a") == 3
    assert db.event_store.save_snapshot(Snapshot("A", "a", 2, 1, {"n": 2})) is False
    stored = db.event_store.load_snapshot("A", "a")
    assert stored is not None and (stored.last_sequence, stored.snapshot_version) == (3, 0)


def test_a_single_append_that_loses_to_an_open_transaction_reports_its_sequence(
    db: Any,
) -> None:
    """One event after others (APPEND_NEXT): its insert waits for the winner's uncommitted next
    event, then fails on events_pkey; the conflict reads the winner's sequence afresh (the
    first-event test above goes through append_events since migration 0012)."""
    db.event_store.append("A", "a", [event(), event(), event()], expected_sequence=0)
    outcome: list[Any] = []

    def lose() -> None:
        try:
            outcome.append(db.event_store.append("A", "a", [event()], expected_sequence=3))
        except Exception as exc:
            outcome.append(exc)

    with db.transaction() as winner:
        winner.event_store.append("A", "a", [event()], expected_sequence=3)
        loser = threading.Thread(target=lose)
        loser.start()
        time.sleep(0.3)  # the loser waits on the winner's uncommitted sequence 4
        assert not outcome
    loser.join(10)
    (result,) = outcome
    assert isinstance(result, ConcurrencyConflict), result
    assert result.actual_sequence == 4


def test_compaction_deletes_only_its_own_aggregates_events(db: Any, store_url: str) -> None:
    """Two aggregate types sharing an id: compacting one leaves the other whole."""
    for kind in ("A", "B"):
        db.event_store.append(kind, "same", [event(), event()], expected_sequence=0)
    assert db.event_store.save_snapshot(Snapshot("A", "same", 2, 0, {}))
    assert db.event_store.save_snapshot(Snapshot("B", "same", 1, 0, {}))
    assert db.event_store.compact("A", "same") == 2
    assert [e.sequence for e in db.event_store.load("B", "same")] == [1, 2]


def test_several_events_that_lose_the_race_report_the_winners_sequence_not_their_own(
    db: Any,
) -> None:
    """Three events past a winner's one: the loser's insert skips the clash on the first and
    writes the other two before it fails; the sequence it reports is the winner's (6), not
    that of its own rows, which its failure undoes (8, before migration 0010)."""
    db.event_store.append("Account", "a-1", [event() for _ in range(5)], expected_sequence=0)
    outcome: list[Any] = []
    with db.transaction() as winner:
        winner.event_store.append("Account", "a-1", [event()], expected_sequence=5)

        def lose() -> None:
            try:
                outcome.append(
                    db.event_store.append(
                        "Account", "a-1", [event(), event(), event()], expected_sequence=5
                    )
                )
            except Exception as exc:
                outcome.append(exc)

        loser = threading.Thread(target=lose)
        loser.start()
        time.sleep(0.3)  # the loser waits on the winner's uncommitted sequence 6
        assert not outcome
    loser.join(10)
    (result,) = outcome
    assert isinstance(result, ConcurrencyConflict), result
    assert result.actual_sequence == 6
    assert [e.sequence for e in db.event_store.load("Account", "a-1")] == [1, 2, 3, 4, 5, 6]


def test_racing_writers_on_one_aggregate_lose_nothing_and_double_nothing(db: Any) -> None:
    writers, appends = 8, 6
    done: list[tuple[int, int]] = []
    conflicts: list[tuple[int, int]] = []  # (expected, actual)
    lock = threading.Lock()

    def write(writer: int) -> None:
        for attempt in range(appends):
            while True:
                last = db.event_store.last_sequence("Race", "r")
                try:
                    db.event_store.append(
                        "Race",
                        "r",
                        [event(writer=writer, attempt=attempt, part=p) for p in range(2)],
                        expected_sequence=last,
                    )
                except ConcurrencyConflict as exc:
                    with lock:
                        conflicts.append((last, exc.actual_sequence or -1))
                    continue
                with lock:
                    done.append((writer, attempt))
                break

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stored = db.event_store.load("Race", "r")
    assert [e.sequence for e in stored] == list(range(1, 2 * writers * appends + 1))
    written = [(e.payload["writer"], e.payload["attempt"]) for e in stored]
    assert sorted(written) == sorted([pair for pair in done for _ in range(2)])
    for first, second in zip(stored[::2], stored[1::2], strict=True):  # an append stays whole
        assert (first.payload["part"], second.payload["part"]) == (0, 1)
        assert second.position == first.position + 1
    # a loser learns a sequence that really was the last one: stored, and past its expectation
    for expected, actual in conflicts:
        assert actual > expected and actual % 2 == 0


def test_read_all_is_the_global_order(db: Any) -> None:
    appended: list[RecordedEvent] = []
    for index in range(5):
        appended += db.event_store.append("A", f"a{index}", [event(i=index)], expected_sequence=0)
        appended += db.event_store.append("B", f"b{index}", [event(i=index)], expected_sequence=0)
    everything = read_everything(db, count=10)
    assert everything == sorted(appended, key=lambda e: e.position) == appended
    assert db.event_store.read_all(after_position=appended[3].position, limit=2) == appended[4:6]
    only_b = db.event_store.read_all(aggregate_type="B")
    assert only_b == [e for e in appended if e.aggregate_type == "B"]
    assert db.event_store.read_all(after_position=appended[-1].position) == []


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda es: es.append("", "a", [event()], expected_sequence=0), "aggregate_type"),
        (lambda es: es.append("A", " a", [event()], expected_sequence=0), "aggregate_id"),
        (lambda es: es.append("A", "a\x00", [event()], expected_sequence=0), "aggregate_id"),
        (lambda es: es.append("A", "x" * 257, [event()], expected_sequence=0), "aggregate_id"),
        (lambda es: es.append("A", "a", [], expected_sequence=0), "empty"),
        (lambda es: es.append("A", "a", event(), expected_sequence=0), "list of NewEvent"),
        (lambda es: es.append("A", "a", [{"x": 1}], expected_sequence=0), r"events\[0\]"),
        (lambda es: es.append("A", "a", [event()], expected_sequence=-1), "expected_sequence"),
        (lambda es: es.append("A", "a", [event()], expected_sequence="0"), "expected_sequence"),
        (lambda es: es.load("A", "a", after_sequence=-1), "after_sequence"),
        (lambda es: es.read_all(limit=0), "limit"),
        (lambda es: es.read_all(after_position=-1), "after_position"),
    ],
)
def test_bad_arguments_are_refused_and_nothing_is_written(
    db: Any, store_url: str, call: Any, named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        call(db.event_store)
    assert stored_rows(store_url) == []


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: NewEvent("T", {"x": float("nan")}), r"payload\['x'\]"),
        (lambda: NewEvent("T", {"x": float("inf")}), "Infinity"),
        (lambda: NewEvent("T", {"x": Decimal("1.10")}), "Decimal"),
        (lambda: NewEvent("T", {1: "a"}), "key"),
        (lambda: NewEvent("T", {"x": "a\x00b"}), "NUL"),
        (lambda: NewEvent("T", {"x": "\ud800"}), "surrogate"),
        (lambda: NewEvent("T", {"a\x00": 1}), "NUL"),
        (lambda: NewEvent("T", {"n": 1, "\udc80": None}), "surrogate"),
        (lambda: NewEvent("T", {"n": 1, 2.5: "b"}), "key"),
        (lambda: NewEvent("T", {}, metadata={"x": [object()]}), r"metadata\['x'\]\[0\]"),
        (lambda: NewEvent("T", []), "dict"),
        (lambda: NewEvent("", {}), "event_type"),
        (lambda: NewEvent("T", {}, event_version="v" * 33), "event_version"),
    ],
)
def test_bad_events_are_refused_when_built(build: Any, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        build()


def test_a_payload_changed_after_building_is_refused_and_nothing_is_written(
    db: Any, store_url: str
) -> None:
    changed = event(x=1)
    changed.payload["x"] = float("nan")
    with pytest.raises(ValidationError, match="payload"):
        db.event_store.append("A", "a", [event(), changed], expected_sequence=0)
    assert stored_rows(store_url) == []


def test_a_payload_changed_into_a_cycle_after_building_is_refused(db: Any, store_url: str) -> None:
    """Refused as a cycle at once, whatever the recursion limit: with a raised one, an encoder
    without circular-reference markers recursed until the C stack overflowed (found by a
    probe: a segmentation fault at 100,000)."""
    changed = event(x=1)
    changed.payload["x"] = changed.payload
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        with pytest.raises(ValidationError, match=r"payload.*Circular reference"):
            db.event_store.append("A", "a", [changed], expected_sequence=0)
    finally:
        sys.setrecursionlimit(limit)
    assert stored_rows(store_url) == []


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(payload=st.dictionaries(st.text(), _JSON, max_size=6))
def test_the_json_sent_is_what_json_dumps_writes(payload: dict[str, Any]) -> None:
    expected = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert event_store_ops._dumps(payload) == expected


def test_a_conflict_read_at_the_expected_sequence_says_the_aggregate_moved_there() -> None:
    """An expectation one too high that a concurrent append fills before the conflict's read
    (found by a probe): the message no longer says "at sequence 6, not 6"."""
    params = {"aggregate_type": "A", "aggregate_id": "a", "expected_sequence": 6}
    conflict = event_store_ops._conflict(params, 6)
    assert conflict.actual_sequence == 6
    assert "was not at sequence 6 when the append ran (it is now)" in str(conflict)
    assert "is at sequence 7, not 6" in str(event_store_ops._conflict(params, 7))


def test_a_timeout_while_appending_is_unavailable_not_a_conflict(
    db: Any, open_database: Any, store_url: str
) -> None:
    """The bot's incident 846: a busy database read as "already stored". Here a writer stuck
    behind another's uncommitted key times out: DatabaseUnavailable, and never a conflict."""
    with db.transaction() as holder, open_database(store_url, statement_timeout=0.3) as short:
        holder.event_store.append("A", "a", [event()], expected_sequence=0)
        with pytest.raises(DatabaseUnavailable) as raised:
            short.event_store.append("A", "a", [event()], expected_sequence=0)
        assert not isinstance(raised.value, Conflict)
    assert db.event_store.last_sequence("A", "a") == 1


def test_a_connection_killed_while_appending_is_unavailable_not_a_conflict(
    db: Any, open_database: Any, store_url: str
) -> None:
    with db.transaction() as holder, open_database(store_url) as victim:
        holder.event_store.append("A", "a", [event()], expected_sequence=0)
        failures: list[BaseException] = []

        def append() -> None:
            try:
                victim.event_store.append("A", "a", [event()], expected_sequence=0)
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=append)
        thread.start()
        with psycopg.connect(store_url, autocommit=True) as admin:
            deadline = time.monotonic() + 10
            killed = 0
            while not killed and time.monotonic() < deadline:
                # this database's only: another worker's (or run's) appends wait on locks too
                killed = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND (query LIKE '%%append_events%%' "
                    "OR query LIKE '%%INSERT INTO \"events\"%%') "
                    "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ).fetchone()[0]
                time.sleep(0.02)
        thread.join(10)
    (failure,) = failures
    assert isinstance(failure, DatabaseUnavailable) and not isinstance(failure, Conflict)


def test_a_serialization_failure_is_unavailable_to_retry_not_a_conflict(
    db: Any, store_url: str
) -> None:
    """Busy, timeout, serialization: DatabaseUnavailable, the one error to retry, never a
    conflict. A REPEATABLE READ block whose checkpoint another session advanced meanwhile; it
    was reported as "the database connection failed" (found by a probe)."""
    with db.transaction() as tx:
        tx.checkpoints.advance("p", 1)
    with pytest.raises(DatabaseUnavailable) as raised, db.transaction() as tx:
        tx.connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert tx.checkpoints.get("p") == 1
        with psycopg.connect(store_url, autocommit=True) as other:
            other.execute("UPDATE checkpoints SET position = 2 WHERE name = 'p'")
        tx.checkpoints.advance("p", 3)
    assert not isinstance(raised.value, Conflict)
    assert "could not serialize access" in str(raised.value)
    assert "connection failed" not in str(raised.value)


def test_a_unique_violation_elsewhere_is_not_a_concurrency_conflict(db: Any) -> None:
    (first,) = db.event_store.append("A", "a", [event()], expected_sequence=0)
    with pytest.raises(Conflict) as raised, db.transaction() as tx:
        tx.connection.execute(
            "INSERT INTO events (position, aggregate_type, aggregate_id, sequence, event_type, "
            "payload) VALUES (%s, 'A', 'b', 1, 'T', '{}')",
            (first.position,),
        )
    assert not isinstance(raised.value, ConcurrencyConflict)
    assert "events_position_key" in str(raised.value)


# A hand-written INSERT that skips the library's checks: each of the table's rules (the column
# domains of migration 0009), broken alone, is refused by the database under its own name.
_GOOD_ROW = {
    "position": 1,
    "aggregate_type": "A",
    "aggregate_id": "by-hand",
    "sequence": 1,
    "event_type": "T",
    "event_version": "1",
    "payload": "{}",
    "metadata": "{}",
}


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("position", 0),
        ("sequence", 0),
        ("aggregate_type", ""),
        ("aggregate_id", "x" * 257),
        ("event_type", ""),
        ("event_version", "v" * 33),
        ("payload", "[1]"),
        ("metadata", '"text"'),
    ],
)
def test_a_row_written_by_hand_that_breaks_a_rule_is_refused(
    db: Any, column: str, value: Any
) -> None:
    row = {**_GOOD_ROW, column: value}
    with pytest.raises(ValidationError, match=f"events_{column}_check"), db.transaction() as tx:
        tx.connection.execute(
            "INSERT INTO events (position, aggregate_type, aggregate_id, sequence, event_type, "
            "event_version, payload, metadata) VALUES (%(position)s, %(aggregate_type)s, "
            "%(aggregate_id)s, %(sequence)s, %(event_type)s, %(event_version)s, "
            "%(payload)s::jsonb, %(metadata)s::jsonb)",
            row,
        )
    assert db.event_store.last_sequence("A", "by-hand") == 0
