"""Helpers of the event store's tests (issue #27)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from persistence import Database, NewEvent, RecordedEvent

EMPTY_EVENT_STORE = "DELETE FROM events; DELETE FROM snapshots; DELETE FROM checkpoints;"
# The test server is shared: another run's write transaction (an import's, say) holds the
# gap-free horizon back until it ends, so a reader may see an event well after its commit.
# Bounded waits, generous (below the 60 s per-test timeout).
READABLE_WITHIN = 45.0


@pytest.fixture
def store_url(emptied_url: str, _session_db: Database) -> Iterator[str]:
    """The test database with the event store's tables emptied too."""
    with _session_db.pool.connection() as conn:
        conn.execute(EMPTY_EVENT_STORE)
    yield emptied_url


def event(kind: str = "Happened", **payload: Any) -> NewEvent:
    return NewEvent(kind, payload)


def read_everything(db: Any, after: int = 0, *, count: int) -> list[RecordedEvent]:
    """read_all from ``after`` until ``count`` events came (waiting out the horizon)."""
    found: list[RecordedEvent] = []
    deadline = time.monotonic() + READABLE_WITHIN
    while len(found) < count:
        page = db.event_store.read_all(after_position=after, limit=1000)
        if page:
            found += page
            after = page[-1].position
            continue
        assert time.monotonic() < deadline, f"only {len(found)} of {count} events readable"
        time.sleep(0.01)
    return found


def stored_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT aggregate_type, aggregate_id, sequence, payload FROM events "
            "ORDER BY aggregate_type, aggregate_id, sequence"
        ).fetchall()
