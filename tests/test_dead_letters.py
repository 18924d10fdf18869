"""Poison events and dead letters (issue #25): failed attempts, backoff, dead letters, revive.

Every behavioural test runs on both APIs (the ``db`` and ``open_database`` fixtures). The
worker loop is the one docs/usage.md documents: claim in a transaction, run the handler in a
savepoint, record the failure in the transaction, commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from persistence import (
    ConfigurationError,
    InvalidTransition,
    NotFound,
    QueuedEvent,
    Settings,
    ValidationError,
    migrate,
)
from persistence.config import EVENT_RETRY_DELAY_CAP
from persistence.import_sqlite import ImportFailed
from persistence.migrate import load_migrations
from persistence.queries import events as sql
from tests import bot_store
from tests.factories import make_fill, tx_hash
from tests.test_import_batching import EVENTS, STEPS, run
from tests.test_migrate import pg_dump_schema

POISON = "poison"


class HandlerFailed(Exception):
    pass


def handle(tx: Any, event: QueuedEvent) -> None:
    """Records the event's fill; fails on a poison event, after writing, as a real bug would."""
    fill = make_fill("0.5", tx_hash=event.tx_hash, log_index=event.log_index)
    tx.fills.record(fill)
    if event.payload.get("kind") == POISON:
        raise HandlerFailed(f"cannot handle event {event.id}")


def work_one(db: Any, handler: Callable[[Any, QueuedEvent], None] = handle) -> str | None:
    """One turn of the documented worker loop: 'processed', 'failed', or None (nothing to do)."""
    with db.transaction() as tx:
        event = tx.events.claim_next()
        if event is None:
            return None
        try:
            with tx.transaction() as savepoint:
                handler(savepoint, event)
        except HandlerFailed as exc:
            tx.events.mark_failed(event.id, f"{type(exc).__name__}: {exc}")
            return "failed"
        tx.events.mark_processed(event.id)
        return "processed"


def work_until_idle(db: Any, turns: int = 50) -> list[str]:
    done = []
    for _ in range(turns):
        outcome = work_one(db)
        if outcome is None:
            return done
        done.append(outcome)
    raise AssertionError(f"the queue never ran dry: {done}")


def enqueue(db: Any, block: int, kind: str = "good") -> int:
    event_id = db.events.enqueue(tx_hash(), 0, block, {"kind": kind})
    assert event_id is not None
    return int(event_id)


def event(url: str, event_id: int) -> dict[str, Any]:
    """The event's row, read on a connection of its own (so either API's test can use it)."""
    with psycopg.connect(url) as conn:
        cursor = conn.execute(
            "SELECT attempts, last_error, last_failed_at, next_attempt_at, dead_at, "
            "processed_at FROM event_queue WHERE id = %s",
            (event_id,),
        )
        names = [column.name for column in cursor.description or ()]
        row = cursor.fetchone()
    assert row is not None, f"no event {event_id}"
    return dict(zip(names, row, strict=True))


# --- the poison event and the events behind it ---------------------------------------------


def test_good_events_behind_a_failing_one_are_processed_meanwhile(
    open_database: Any, emptied_url: str
) -> None:
    with open_database(emptied_url, event_retry_delay=30, event_max_attempts=3) as db:
        poison = enqueue(db, 1, POISON)
        good = [enqueue(db, block) for block in range(2, 7)]
        assert work_until_idle(db) == ["failed"] + ["processed"] * 5
        # the poison event waits out its backoff; every good one is done, its fill recorded
        row = event(emptied_url, poison)
        assert row["attempts"] == 1 and row["processed_at"] is None and row["dead_at"] is None
        assert row["last_error"] == f"HandlerFailed: cannot handle event {poison}"
        assert row["next_attempt_at"] - row["last_failed_at"] == timedelta(seconds=30)
        assert all(event(emptied_url, i)["processed_at"] is not None for i in good)
        assert len(db.fills.list()) == 5  # the poison event's fill was rolled back with it
        assert db.events.count_unprocessed() == 1  # waiting for its retry: still to be done
        assert db.events.dead_letters() == [] and db.events.count_dead_letters() == 0


def test_a_failed_event_is_retried_after_its_backoff_and_not_before(
    open_database: Any, emptied_url: str
) -> None:
    with open_database(emptied_url, event_retry_delay=1.5) as db:
        poison = enqueue(db, 1, POISON)
        assert work_one(db) == "failed"
        failed_at = time.monotonic()
        assert work_one(db) is None  # not before the backoff
        while (outcome := work_one(db)) is None:
            assert time.monotonic() - failed_at < 10, "never retried"
            time.sleep(0.05)
        # claimed again once its 1.5 s were over (the clock started after the commit)
        assert outcome == "failed" and time.monotonic() - failed_at >= 1.4
        row = event(emptied_url, poison)
        assert row["attempts"] == 2
        assert row["next_attempt_at"] - row["last_failed_at"] == timedelta(seconds=3)  # doubled


def test_the_backoff_doubles_up_to_its_cap(db: Any, emptied_url: str) -> None:
    event_id = enqueue(db, 1)
    delays = []
    for _ in range(4):
        failed = db.events.mark_failed(event_id, "broker down", retry_delay=100, max_attempts=9)
        delays.append(failed.next_attempt_at - failed.last_failed_at)
    cap = timedelta(seconds=EVENT_RETRY_DELAY_CAP)
    assert delays == [timedelta(seconds=100), timedelta(seconds=200), cap, cap]
    # the first failure's delay is the setting: 1 s by default
    other = enqueue(db, 2)
    failed = db.events.mark_failed(other, "broker down")
    assert failed.next_attempt_at - failed.last_failed_at == timedelta(seconds=1)


def test_after_max_attempts_it_is_a_dead_letter_never_claimed(
    open_database: Any, emptied_url: str
) -> None:
    with open_database(emptied_url, event_retry_delay=0, event_max_attempts=3) as db:
        poison = enqueue(db, 1, POISON)
        good = enqueue(db, 2)
        # delay 0: retried at once, so it fails three times before the good one's turn
        assert work_until_idle(db) == ["failed", "failed", "failed", "processed"]
        [dead] = db.events.dead_letters()
        assert dead.id == poison and dead.attempts == 3 and dead.dead_at is not None
        assert dead.next_attempt_at is None and dead.processed_at is None
        assert dead.last_error == f"HandlerFailed: cannot handle event {poison}"
        assert dead.payload == {"kind": POISON}
        assert db.events.count_dead_letters() == 1
        assert db.events.count_unprocessed() == 0  # a dead letter waits for a person
        assert event(emptied_url, good)["processed_at"] is not None
        with db.transaction() as tx:
            assert tx.events.claim_next() is None  # never claimed again, even with delay 0


def test_revive_puts_a_dead_letter_back_and_it_is_claimed_again(
    open_database: Any, emptied_url: str
) -> None:
    with open_database(emptied_url, event_retry_delay=0, event_max_attempts=1) as db:
        poison = enqueue(db, 1, POISON)
        assert work_until_idle(db) == ["failed"]
        [dead] = db.events.dead_letters()
        revived = db.events.revive(poison)
        assert (revived.attempts, revived.dead_at, revived.next_attempt_at) == (0, None, None)
        # the last failure stays, as history
        assert (revived.last_error, revived.last_failed_at) == (
            dead.last_error,
            dead.last_failed_at,
        )
        assert db.events.dead_letters() == [] and db.events.count_unprocessed() == 1
        assert db.events.revive(poison) == revived  # not dead: returned unchanged
        with db.transaction() as tx:
            claimed = tx.events.claim_next()
            assert claimed is not None and claimed.id == poison
            tx.events.mark_processed(poison)  # fixed: it goes through this time
        with pytest.raises(InvalidTransition, match="processed"):
            db.events.revive(poison)
        with pytest.raises(NotFound, match="99"):
            db.events.revive(99)
        with pytest.raises(ValidationError, match="id"):
            db.events.revive("1")


def test_dead_letters_are_paged_by_id_and_leave_when_marked_processed(
    open_database: Any, emptied_url: str
) -> None:
    with open_database(emptied_url, event_max_attempts=1) as db:
        ids = [enqueue(db, block) for block in range(5)]
        for event_id in ids[:4]:
            assert db.events.mark_failed(event_id, "no such symbol").dead_at is not None
        assert [e.id for e in db.events.dead_letters(limit=3)] == ids[:3]
        assert [e.id for e in db.events.dead_letters(limit=3, after_id=ids[2])] == [ids[3]]
        # dealt with by hand: marking it processed takes it off the list, and it is final
        with db.transaction() as tx:
            tx.events.mark_processed(ids[0])
        assert [e.id for e in db.events.dead_letters()] == ids[1:4]
        assert db.events.count_dead_letters() == 3
        with pytest.raises(ValidationError, match="limit"):
            db.events.dead_letters(limit=0)
        with pytest.raises(ValidationError, match="after_id"):
            db.events.dead_letters(after_id="3")


# --- mark_failed: the attempt is durable; bad input writes nothing --------------------------


def test_the_attempt_survives_the_handlers_rollback(db: Any, emptied_url: str) -> None:
    poison = enqueue(db, 1, POISON)
    assert work_one(db) == "failed"
    # the handler's fill was rolled back with its savepoint; the attempt committed with the claim
    assert db.fills.list() == []
    assert event(emptied_url, poison)["attempts"] == 1

    # a worker whose transaction rolled back entirely records it in a transaction of its own
    other = enqueue(db, 2)
    with pytest.raises(HandlerFailed), db.transaction() as tx:
        claimed = tx.events.claim_next()
        assert claimed.id == other
        tx.events.mark_failed(other, "recorded, then rolled back with the transaction")
        raise HandlerFailed("the whole transaction rolls back")
    assert event(emptied_url, other)["attempts"] == 0  # why the savepoint matters
    failed = db.events.mark_failed(other, "HandlerFailed: the whole transaction rolls back")
    assert failed.attempts == 1 and event(emptied_url, other)["attempts"] == 1


def test_mark_failed_on_an_unknown_or_processed_event(db: Any, emptied_url: str) -> None:
    with pytest.raises(NotFound, match="no queued event with id 99"):
        db.events.mark_failed(99, "boom")
    event_id = enqueue(db, 1)
    with db.transaction() as tx:
        tx.events.claim_next()
        tx.events.mark_processed(event_id)
    with pytest.raises(InvalidTransition, match=f"event {event_id} was processed"):
        db.events.mark_failed(event_id, "boom")
    assert event(emptied_url, event_id)["attempts"] == 0


@pytest.mark.parametrize(
    ("reason", "message"),
    [(None, "must be a str"), (b"boom", "must be a str"), ("", "empty"), (" \n", "empty")],
)
def test_a_bad_reason_is_refused_with_nothing_written(
    db: Any, emptied_url: str, reason: Any, message: str
) -> None:
    event_id = enqueue(db, 1)
    with pytest.raises(ValidationError, match=message):
        db.events.mark_failed(event_id, reason)
    with pytest.raises(ValidationError, match="id"):
        db.events.mark_failed(0, "boom")
    with pytest.raises(ValidationError, match="max_attempts"):
        db.events.mark_failed(event_id, "boom", max_attempts=0)
    with pytest.raises(ValidationError, match="retry_delay"):
        db.events.mark_failed(event_id, "boom", retry_delay=-1)
    row = event(emptied_url, event_id)
    assert (row["attempts"], row["last_error"], row["next_attempt_at"]) == (0, None, None)


def test_a_long_or_odd_reason_is_kept_bounded_and_storable(db: Any, emptied_url: str) -> None:
    event_id = enqueue(db, 1)
    failed = db.events.mark_failed(event_id, "x" * 5000)
    assert len(failed.last_error) == 2000 and failed.last_error.endswith("x\u2026")
    # str(exc) may carry what PostgreSQL text cannot: escaped, never refused
    failed = db.events.mark_failed(event_id, "bad byte \x00 and \ud800 here")
    assert failed.last_error == "bad byte \\x00 and \\ud800 here"
    assert event(emptied_url, event_id)["last_error"] == failed.last_error


# --- the settings reach the operation --------------------------------------------------------


def test_the_settings_from_the_environment_and_keywords(
    open_database: Any, emptied_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (Settings().event_max_attempts, Settings().event_retry_delay) == (5, 1.0)
    env = {"PERSISTENCE_EVENT_MAX_ATTEMPTS": "2", "PERSISTENCE_EVENT_RETRY_DELAY": "0.25"}
    settings = Settings.from_env(environ=env)
    assert (settings.event_max_attempts, settings.event_retry_delay) == (2, 0.25)
    assert Settings.from_env(environ=env, event_max_attempts=7).event_max_attempts == 7
    monkeypatch.setenv("PERSISTENCE_EVENT_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("PERSISTENCE_EVENT_RETRY_DELAY", "0")
    with open_database(emptied_url) as db:
        event_id = enqueue(db, 1)
        first = db.events.mark_failed(event_id, "one")
        assert first.dead_at is None and first.next_attempt_at == first.last_failed_at
        with db.transaction() as tx:  # the transaction's queue has the same settings
            assert tx.events.mark_failed(event_id, "two").dead_at is not None
    with open_database(emptied_url, event_max_attempts=1) as db:  # a keyword wins
        assert db.events.mark_failed(enqueue(db, 2), "one").dead_at is not None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PERSISTENCE_EVENT_MAX_ATTEMPTS", "0", "event_max_attempts must be an integer >= 1"),
        ("PERSISTENCE_EVENT_MAX_ATTEMPTS", "-3", "event_max_attempts must be an integer >= 1"),
        ("PERSISTENCE_EVENT_MAX_ATTEMPTS", "2.5", "event_max_attempts must be an integer"),
        ("PERSISTENCE_EVENT_MAX_ATTEMPTS", "many", "event_max_attempts must be an integer"),
        ("PERSISTENCE_EVENT_RETRY_DELAY", "-1", "event_retry_delay must be from 0 to 300"),
        ("PERSISTENCE_EVENT_RETRY_DELAY", "301", "event_retry_delay must be from 0 to 300"),
        ("PERSISTENCE_EVENT_RETRY_DELAY", "nan", "event_retry_delay must be from 0 to 300"),
        ("PERSISTENCE_EVENT_RETRY_DELAY", "soon", "event_retry_delay must be a number"),
    ],
)
def test_bad_event_settings_are_refused(variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        Settings.from_env(environ={variable: value})
    assert variable in str(caught.value)


# --- schema: the claim's index, and the migration's down ------------------------------------


def test_the_claim_reads_the_live_index_in_order(db: Any, emptied_url: str) -> None:
    for block in range(3):
        enqueue(db, block)
    with psycopg.connect(emptied_url) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql.CLAIM_NEXT_EVENT))
        assert "event_queue_live_idx" in plan and "Sort" not in plan, plan
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + sql.COUNT_DEAD_LETTERS))
        assert "event_queue_dead_idx" in plan, plan


def test_the_migration_down_restores_the_previous_schema(empty_database_url: str) -> None:
    [attempts] = [m for m in load_migrations() if m.path.name.startswith("0004_event_attempts")]
    settings = Settings(url=empty_database_url)
    migrate.apply(settings, target=attempts.version - 1)
    before = pg_dump_schema(empty_database_url)
    migrate.apply(settings, target=attempts.version)
    assert "event_queue_live_idx" in pg_dump_schema(empty_database_url)
    migrate.rollback(settings, target=attempts.version - 1)
    assert pg_dump_schema(empty_database_url) == before


# --- the SQLite import ----------------------------------------------------------------------


def test_imported_events_arrive_fresh_and_can_fail(
    tmp_path: Path, emptied_url: str, open_database: Any
) -> None:
    path = bot_store.write_batching(tmp_path / "bot.db", STEPS, events=EVENTS)
    result, _ = run(path, emptied_url)
    assert result.tables["event_queue"] == (2, 0, 2)
    assert "none failed nor dead" in result.verified["event_queue"]
    with open_database(emptied_url, event_max_attempts=1) as db:
        with db.transaction() as tx:
            imported = tx.events.claim_next()  # the unprocessed one
            assert imported is not None
            assert (imported.attempts, imported.last_error, imported.dead_at) == (0, None, None)
            assert imported.next_attempt_at is None
            assert tx.events.mark_failed(imported.id, "cannot handle").dead_at is not None
        assert [e.id for e in db.events.dead_letters()] == [imported.id]


def test_the_import_refuses_events_that_arrive_failed(tmp_path: Path, emptied_url: str) -> None:
    """The verification reads the stored events back: a trigger of the target's (standing in
    for a conversion that carried attempts) makes it fail, with nothing written."""
    path = bot_store.write_batching(tmp_path / "bot.db", STEPS, events=EVENTS)
    with psycopg.connect(emptied_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION test_failed_on_arrival() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN NEW.attempts := 1; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER test_failed_on_arrival BEFORE INSERT ON event_queue "
            "FOR EACH ROW EXECUTE FUNCTION test_failed_on_arrival()"
        )
        try:
            with pytest.raises(ImportFailed, match=r"2 event\(s\) arrived with failed attempts"):
                run(path, emptied_url)
        finally:
            conn.execute("DROP TRIGGER test_failed_on_arrival ON event_queue")
            conn.execute("DROP FUNCTION test_failed_on_arrival()")
        assert conn.execute("SELECT count(*) FROM onchain_trades").fetchone() == (0,)
