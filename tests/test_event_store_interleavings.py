"""Hypothesis over interleavings of appends, snapshots, compaction and projections (#27).

A model keeps each aggregate's events; after every step the store must agree with it, and a
projection that compacts only behind its checkpoint (the documented rule) handles every event
exactly once, in global order.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence import ConcurrencyConflict, Database, EventsCompacted, RecordedEvent, Snapshot
from tests.event_store_support import EMPTY_EVENT_STORE, event, read_everything, store_url

__all__ = ["store_url"]

AGGREGATES = ["a", "b", "c"]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(AGGREGATES), st.integers(1, 4)),
        st.tuples(st.just("stale"), st.sampled_from(AGGREGATES), st.integers(1, 2)),
        st.tuples(st.just("snapshot"), st.sampled_from(AGGREGATES), st.integers(0, 3)),
        st.tuples(st.just("compact"), st.sampled_from(AGGREGATES), st.just(0)),
        st.tuples(st.just("project"), st.just("a"), st.integers(1, 5)),
    ),
    min_size=1,
    max_size=14,
)


@pytest.mark.usefixtures("store_url")
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=steps)
def test_interleavings_keep_every_event_once(
    db: Any, _session_db: Database, plan: list[tuple[str, str, int]]
) -> None:
    with _session_db.pool.connection() as conn:
        conn.execute(EMPTY_EVENT_STORE)
    es = db.event_store
    model: dict[str, list[RecordedEvent]] = {name: [] for name in AGGREGATES}
    snapshot_at = dict.fromkeys(AGGREGATES, 0)
    compacted_to = dict.fromkeys(AGGREGATES, 0)
    projected: list[RecordedEvent] = []

    def project(limit: int) -> int:
        def handler(tx: Any, events: list[RecordedEvent]) -> None:
            projected.extend(events)

        return int(es.project("model", handler, limit=limit))

    def catch_up() -> None:
        stored = sum(len(model[name]) - compacted_to[name] for name in AGGREGATES)
        read_everything(db, count=stored)  # everything readable (the horizon moved past it)
        while project(100):
            pass

    for action, name, number in plan:
        last = len(model[name])
        if action == "append":
            model[name] += es.append(
                "T", name, [event(n=i) for i in range(number)], expected_sequence=last
            )
        elif action == "stale":
            with pytest.raises(ConcurrencyConflict) as raised:
                es.append("T", name, [event()], expected_sequence=last + number)
            assert raised.value.actual_sequence == last
        elif action == "snapshot" and last:
            at = max(1, last - number)
            saved = es.save_snapshot(Snapshot("T", name, at, 0, {"at": at}))
            assert saved == (at > snapshot_at[name])
            snapshot_at[name] = max(snapshot_at[name], at)
        elif action == "compact":
            catch_up()  # compact only behind the projection's checkpoint
            removed = es.compact("T", name)
            assert removed == max(0, snapshot_at[name] - compacted_to[name])
            compacted_to[name] = max(compacted_to[name], snapshot_at[name])
        elif action == "project":
            project(number)
        # the store agrees with the model
        assert es.last_sequence("T", name) == len(model[name])
        if compacted_to[name]:
            with pytest.raises(EventsCompacted):
                es.load("T", name)
        assert (
            es.load("T", name, after_sequence=compacted_to[name])
            == (model[name][compacted_to[name] :])
        )
    catch_up()
    everything = sorted((e for events in model.values() for e in events), key=lambda e: e.position)
    assert projected == everything
