"""The event store (issue #27): gap-free reading, snapshots and compaction, checkpoints,
projections and wait_for, on both APIs."""

from __future__ import annotations

import contextlib
import gc
import random
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from persistence import (
    ConcurrencyConflict,
    Database,
    DatabaseUnavailable,
    EventsCompacted,
    InvalidTransition,
    RecordedEvent,
    Snapshot,
    ValidationError,
)
from tests.event_store_support import event, read_everything, store_url

__all__ = ["store_url"]

pytestmark = pytest.mark.usefixtures("store_url")

EFFECTS = "es_test_effects"


def naive_read(url: str, after: int) -> list[int]:
    """What an identity-ordered reader does: every committed position past its checkpoint."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT position FROM events WHERE position > %s ORDER BY position", (after,)
        ).fetchall()
    return [row[0] for row in rows]


# --- gap-free reading ----------------------------------------------------------------------


def test_a_reader_never_skips_an_event_that_commits_later_and_a_naive_one_does(
    db: Any, store_url: str
) -> None:
    with db.transaction() as slow:
        (early,) = slow.event_store.append("A", "slow", [event()], expected_sequence=0)
        (late,) = db.event_store.append("A", "fast", [event()], expected_sequence=0)
        assert late.position > early.position  # positions follow transaction ids...
        naive_seen = naive_read(store_url, 0)  # ...commits land in another order
        assert naive_seen == [late.position]
        assert db.event_store.read_all() == []  # the slow writer holds the horizon
        assert db.event_store.read_all(aggregate_type="A") == []  # one type's reads too
        assert db.event_store.wait_for(0, timeout=0.2, poll_interval=0.05) is False
    assert naive_read(store_url, naive_seen[-1]) == []  # the naive checkpoint skipped `early`
    assert read_everything(db, count=2) == [early, late]
    assert db.event_store.read_all(after_position=early.position, aggregate_type="A") == [late]
    with db.transaction() as tx:  # its own uncommitted event sits at the horizon: not readable
        tx.event_store.append("A", "own", [event()], expected_sequence=0)
        assert tx.event_store.read_all(after_position=late.position) == []
        assert tx.event_store.read_all(after_position=late.position, aggregate_type="A") == []


def test_sleepy_writers_a_checkpointing_reader_sees_every_event_once_in_order(
    db: Any, store_url: str
) -> None:
    writers, appends = 4, 15
    stop = threading.Event()
    seen: list[RecordedEvent] = []
    naive: list[int] = []

    def write(writer: int) -> None:
        rng = random.Random(writer)
        for index in range(appends):
            with db.transaction() as tx:
                tx.event_store.append("W", f"{writer}-{index}", [event()], expected_sequence=0)
                time.sleep(rng.uniform(0, 0.02))

    def read() -> None:
        after = naive_after = 0
        while not stop.is_set():
            page = db.event_store.read_all(after_position=after)
            seen.extend(page)
            after = page[-1].position if page else after
            fresh = naive_read(store_url, naive_after)
            naive.extend(fresh)
            naive_after = fresh[-1] if fresh else naive_after
            time.sleep(0.002)

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stop.set()
    reader.join(10)
    total = writers * appends
    rest = read_everything(db, seen[-1].position if seen else 0, count=total - len(seen))
    everything = seen + rest
    assert [e.position for e in everything] == sorted({e.position for e in everything})
    assert len(everything) == total
    all_positions = [e.position for e in everything]
    skipped = set(all_positions) - set(naive)
    assert skipped, "the naive reader should have skipped an event committed out of order"


# --- snapshots and compaction --------------------------------------------------------------


def test_snapshots_keep_the_latest_and_refuse_the_future(db: Any) -> None:
    es = db.event_store
    es.append("A", "a", [event(n=n) for n in range(5)], expected_sequence=0)
    assert es.load_snapshot("A", "a") is None
    assert es.save_snapshot(Snapshot("A", "a", 3, 0, {"total": 3})) is True
    assert es.save_snapshot(Snapshot("A", "a", 3, 0, {"total": -1})) is False
    assert es.save_snapshot(Snapshot("A", "a", 2, 0, {"total": -1})) is False
    stored = es.load_snapshot("A", "a")
    assert (stored.last_sequence, stored.payload) == (3, {"total": 3})
    assert stored.taken_at is not None
    assert es.save_snapshot(Snapshot("A", "a", 3, 1, {"v1": True})) is True  # a schema bump
    assert es.save_snapshot(Snapshot("A", "a", 5, 0, {"total": 5})) is True
    with pytest.raises(ValidationError, match="past the last sequence"):
        es.save_snapshot(Snapshot("A", "a", 6, 0, {}))
    with pytest.raises(ValidationError, match="past the last sequence"):
        es.save_snapshot(Snapshot("A", "new", 1, 0, {}))
    assert es.load_snapshot("A", "a").payload == {"total": 5}


def test_compaction_deletes_what_the_snapshot_covers_and_appends_continue(db: Any) -> None:
    es = db.event_store
    es.append("A", "a", [event(n=n) for n in range(5)], expected_sequence=0)
    assert es.compact("A", "a") == 0  # no snapshot: nothing covered
    es.save_snapshot(Snapshot("A", "a", 3, 0, {"total": 3}))
    assert es.compact("A", "a") == 3
    assert es.compact("A", "a") == 0
    assert es.last_sequence("A", "a") == 5
    assert [e.sequence for e in es.load("A", "a", after_sequence=3)] == [4, 5]
    with pytest.raises(EventsCompacted, match="load_snapshot"):
        es.load("A", "a")
    es.save_snapshot(Snapshot("A", "a", 5, 0, {"total": 5}))
    assert es.compact("A", "a") == 2
    assert es.last_sequence("A", "a") == 5
    with pytest.raises(EventsCompacted):
        es.load("A", "a", after_sequence=4)
    assert es.load("A", "a", after_sequence=5) == []
    with pytest.raises(ConcurrencyConflict) as raised:
        es.append("A", "a", [event()], expected_sequence=0)
    assert raised.value.actual_sequence == 5
    (sixth,) = es.append("A", "a", [event()], expected_sequence=5)
    assert sixth.sequence == 6


# --- checkpoints ---------------------------------------------------------------------------


def test_a_checkpoint_moves_alone(db: Any, api: str) -> None:
    """Advancing one projection's checkpoint, or rebuilding one, leaves the others where they
    are (a mutation probe dropped the name from both statements and no test saw it)."""
    db.event_store.append("A", "a", [event(), event()], expected_sequence=0)
    read_everything(db, count=2)

    def nothing(tx: Any, events: list[RecordedEvent]) -> Iterator[Any]:
        yield tx.connection.execute("SELECT 1")  # handles, writes nothing

    skip = on(api, nothing)
    assert db.event_store.project("one", skip, limit=1) == 1
    assert db.event_store.project("two", skip, version=1) == 2
    with db.transaction() as tx:
        one, two = tx.checkpoints.get("one"), tx.checkpoints.get("two")
    assert 0 < one < two
    assert db.event_store.project("three", skip, version=1) == 2
    assert db.event_store.project("three", skip, version=2) == 2  # a rebuild
    with db.transaction() as tx:
        assert (tx.checkpoints.get("one"), tx.checkpoints.get("two")) == (one, two)


def test_checkpoints_move_forward_only(db: Any) -> None:
    with db.transaction() as tx:
        assert tx.checkpoints.get("ledger") == 0
        tx.checkpoints.advance("ledger", 10)
        tx.checkpoints.advance("ledger", 10)  # the same: a no-op
        assert tx.checkpoints.get("ledger") == 10
        with pytest.raises(ConcurrencyConflict) as raised:
            tx.checkpoints.advance("ledger", 9)
        assert raised.value.actual_sequence == 10
        with pytest.raises(ValidationError, match="name"):
            tx.checkpoints.get("")


# --- projections ---------------------------------------------------------------------------


@pytest.fixture
def effects(store_url: str) -> Iterator[str]:
    """A read model's table: one row per handled event, keyed by position (a double is a
    unique violation)."""
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {EFFECTS}")
        conn.execute(f"CREATE TABLE {EFFECTS} (position bigint PRIMARY KEY, handler text)")
    yield store_url
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {EFFECTS}")


def handled(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(f"SELECT position FROM {EFFECTS} ORDER BY 1")]


def on(api: str, body: Any) -> Any:
    """One handler for both APIs from ``body``, a generator that yields each call it makes on
    ``tx``: on the async API each is awaited (the handler gets the real AsyncTransaction)."""
    if api == "sync":

        def handler(*args: Any) -> None:
            steps, reply = body(*args), None
            with contextlib.suppress(StopIteration):
                while True:
                    reply = steps.send(reply)

        return handler

    async def ahandler(*args: Any) -> None:
        steps, reply = body(*args), None
        with contextlib.suppress(StopIteration):
            while True:
                reply = await steps.send(reply)

    return ahandler


def record(api: str, label: str = "h") -> Any:
    def body(tx: Any, events: list[RecordedEvent]) -> Iterator[Any]:
        for e in events:
            yield tx.connection.execute(
                f"INSERT INTO {EFFECTS} VALUES (%s, %s)", (e.position, label)
            )

    return on(api, body)


def test_project_handles_batches_and_advances(db: Any, api: str, effects: str) -> None:
    appended = [
        e
        for n in range(5)
        for e in db.event_store.append("A", f"a{n}", [event(), event()], expected_sequence=0)
    ]
    read_everything(db, count=10)
    assert db.event_store.project("ledger", record(api), limit=4) == 4
    assert db.event_store.project("ledger", record(api), limit=4) == 4
    assert db.event_store.project("ledger", record(api), limit=4) == 2
    assert db.event_store.project("ledger", record(api), limit=4) == 0
    assert handled(effects) == [e.position for e in appended]
    with db.transaction() as tx:
        assert tx.checkpoints.get("ledger") == appended[-1].position


def test_a_failing_handler_rolls_back_its_writes_and_the_checkpoint(
    db: Any, api: str, effects: str
) -> None:
    db.event_store.append("A", "a", [event(), event()], expected_sequence=0)
    read_everything(db, count=2)

    def fail(tx: Any, events: list[RecordedEvent]) -> Iterator[Any]:
        for e in events:
            yield tx.connection.execute(f"INSERT INTO {EFFECTS} VALUES (%s, 'x')", (e.position,))
        raise RuntimeError("the read model is broken")

    with pytest.raises(RuntimeError, match="broken"):
        db.event_store.project("ledger", on(api, fail))
    assert handled(effects) == []
    with db.transaction() as tx:
        assert tx.checkpoints.get("ledger") == 0
    assert db.event_store.project("ledger", record(api)) == 2
    assert len(handled(effects)) == 2


def test_two_projectors_of_one_name_never_handle_an_event_twice(
    db: Any, api: str, effects: str
) -> None:
    total = 40
    for n in range(total):
        db.event_store.append("A", f"a{n}", [event()], expected_sequence=0)
    read_everything(db, count=total)
    errors: list[BaseException] = []

    def run(label: str) -> None:
        try:
            while db.event_store.project("ledger", record(api, label), limit=3):
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"p{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(handled(effects)) == total


def test_a_new_version_rebuilds_and_an_old_one_is_refused(db: Any, api: str, effects: str) -> None:
    db.event_store.append("A", "a", [event(), event(), event()], expected_sequence=0)
    read_everything(db, count=3)
    resets: list[int] = []

    def clear(tx: Any) -> Iterator[Any]:
        resets.append(1)
        yield tx.connection.execute(f"DELETE FROM {EFFECTS}")

    reset = on(api, clear)

    assert db.event_store.project("ledger", record(api), version=1, reset=reset) == 3
    assert db.event_store.project("ledger", record(api), version=1, reset=reset) == 0
    assert len(resets) == 1
    assert db.event_store.project("ledger", record(api, "v2"), version=2, reset=reset) == 3
    assert len(resets) == 2 and len(handled(effects)) == 3
    with pytest.raises(InvalidTransition, match="version 2"):
        db.event_store.project("ledger", record(api), version=1, reset=reset)
    # nor one that passes no version, the code from before versions (found by a probe)
    with pytest.raises(InvalidTransition, match="at version 2, this projector passes none"):
        db.event_store.project("ledger", record(api))
    with pytest.raises(ValidationError, match="handler"):
        db.event_store.project("ledger", None)
    assert sorted(row[1] for row in _effect_rows(effects)) == ["v2"] * 3


def _effect_rows(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT position, handler FROM {EFFECTS}").fetchall()


def test_an_async_handler_on_the_blocking_api_is_refused_and_nothing_is_lost(
    _session_db: Database, effects: str
) -> None:
    """Database (blocking) called an ``async def`` handler, got a coroutine it never ran, and
    advanced the checkpoint past the events: lost, with only a RuntimeWarning (found by a
    probe). Refused in the transaction: the checkpoint stays, and a plain handler gets them."""
    db = _session_db
    db.event_store.append("A", "a", [event(), event()], expected_sequence=0)
    read_everything(db, count=2)

    async def handler(tx: Any, events: list[RecordedEvent]) -> None:
        raise AssertionError("never run")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited" either
        with pytest.raises(ValidationError, match="returned an awaitable on the blocking"):
            db.event_store.project("ledger", handler)
        gc.collect()
    with db.transaction() as tx:
        assert tx.checkpoints.get("ledger") == 0
    assert db.event_store.project("ledger", record("sync")) == 2
    assert len(handled(effects)) == 2


def test_appends_in_a_handler_commit_with_the_checkpoint(db: Any, api: str) -> None:
    db.event_store.append("Order", "o1", [event("Placed")], expected_sequence=0)
    read_everything(db, count=1)

    def derive(tx: Any, events: list[RecordedEvent]) -> Iterator[Any]:
        for e in events:
            yield tx.event_store.append(
                "Audit", e.aggregate_id, [event("Seen")], expected_sequence=0
            )

    assert db.event_store.project("audit", on(api, derive), limit=10) == 1
    assert [e.event_type for e in db.event_store.load("Audit", "o1")] == ["Seen"]


# --- wait_for ------------------------------------------------------------------------------


def test_wait_for_returns_false_on_timeout(db: Any) -> None:
    start = time.monotonic()
    assert db.event_store.wait_for(2**62, timeout=0.3, poll_interval=0.1) is False
    assert 0.3 <= time.monotonic() - start < 3


def test_wait_for_on_a_busy_pool_gives_up_near_its_timeout_not_the_pools(
    store_url: str,
) -> None:
    """Its check waits for a connection only as long as wait_for has left (at least 1 s), not
    the pool's acquire timeout (30 s here; a probe saw wait_for(timeout=0.5) take 10 s)."""
    with Database.connect(store_url, max_size=1, acquire_timeout=30) as db:
        with db.transaction():  # the pool's one connection, held
            start = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match="no database connection became free"):
                db.event_store.wait_for(0, timeout=0.3, poll_interval=0.1)
            assert time.monotonic() - start < 10
        assert db.event_store.wait_for(2**62, timeout=0.1) is False  # the connection is back


def woken_by(db: Any, commit: Any) -> tuple[bool, float]:
    """Runs ``commit`` (an append) while wait_for waits with a 40 s poll; whether wait_for
    returned True, and how long after the commit the listener got the notification.

    The notification is what wakes wait_for; when it returns depends on the horizon too, which
    a long write transaction elsewhere on the (shared) test server may hold back."""
    db.event_store.wait_for(2**62, timeout=0.01)  # the listener is in place from here on
    wakeups = db.event_store.wakeups
    woke: list[bool] = []
    waiter = threading.Thread(
        target=lambda: woke.append(db.event_store.wait_for(0, timeout=45, poll_interval=40))
    )
    waiter.start()
    time.sleep(0.2)
    seen = wakeups.generation
    commit()
    committed = time.monotonic()
    while wakeups.generation == seen and time.monotonic() - committed < 5:
        time.sleep(0.001)
    notified = time.monotonic() - committed
    waiter.join(50)
    return woke == [True], notified


def test_wait_for_wakes_on_an_append(db: Any) -> None:
    returned, notified = woken_by(
        db, lambda: db.event_store.append("A", "a", [event()], expected_sequence=0)
    )
    assert returned and notified < 5  # the notification, not the 40 s poll


def test_wait_for_wakes_on_a_transaction_that_appended(db: Any) -> None:
    def commit() -> None:
        with db.transaction() as tx:
            tx.event_store.append("A", "a", [event()], expected_sequence=0)

    returned, notified = woken_by(db, commit)
    assert returned and notified < 5


def test_a_stream_of_appends_ends_with_a_notification(db: Any) -> None:
    """Under a stream the notifier coalesces pokes (one NOTIFY per gap; a poke that finds the
    notifier's event set skips setting it): a notification must still follow the last append.
    Counted by the listener's generation, so a write transaction elsewhere
    on the shared test server (which holds readers back, not notifications) cannot fail it."""
    db.event_store.wait_for(2**62, timeout=0.01)  # the listener is in place from here on
    wakeups = db.event_store.wakeups
    writers, appends = 8, 25
    seen_before: list[int] = []  # the listener's generation before each append

    def write(writer: int) -> None:
        for sequence in range(appends):
            seen = wakeups.generation
            db.event_store.append(
                "S", f"s-{writer}", [event(n=sequence)], expected_sequence=sequence
            )
            seen_before.append(seen)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(seen_before) == writers * appends
    last = max(seen_before)  # a notification sent after that append's poke bumps past it
    deadline = time.monotonic() + 5
    while wakeups.generation == last and time.monotonic() < deadline:
        time.sleep(0.005)
    assert wakeups.generation > last


def test_wait_for_polls_when_no_notification_comes(db: Any, store_url: str) -> None:
    """A writer that is not this library sends no NOTIFY: the poll finds its event."""
    woke: list[bool] = []
    waiter = threading.Thread(
        target=lambda: woke.append(db.event_store.wait_for(0, timeout=45, poll_interval=0.2))
    )
    waiter.start()
    time.sleep(0.3)
    with psycopg.connect(store_url, autocommit=True) as other:
        other.execute("SELECT * FROM append_events('A', 'a', 0, '[[\"T\", \"1\", {}, {}]]'::jsonb)")
    waiter.join(50)
    assert woke == [True]


def test_wait_for_refuses_bad_arguments(db: Any) -> None:
    for kwargs in ({"timeout": -1}, {"timeout": 1, "poll_interval": 0}, {"timeout": "1"}):
        with pytest.raises(ValidationError):
            db.event_store.wait_for(0, **kwargs)
    with pytest.raises(ValidationError, match="after_position"):
        db.event_store.wait_for(-1, timeout=1)


def test_closing_the_database_stops_its_notifier(store_url: str) -> None:
    db = Database.connect(store_url)
    db.event_store.append("A", "a", [event()], expected_sequence=0)
    db.event_store.wait_for(0, timeout=1)
    wakeups = db.event_store.wakeups
    db.close()
    for thread in (wakeups._notifier, wakeups._listener):
        assert thread is not None and not thread.is_alive()
