"""The event store (issue #27) against what users pick instead: ``eventsourcing``'s PostgreSQL
recorder, SQLite with the bot's sqlite-es scheme, and raw psycopg (the denominators).

The paired, interleaved figures with their spread come from ``python -m bench.events``; these
are the same workloads as pytest-benchmark groups, so ``pytest bench/`` keeps them running.
With ``--benchmark-disable`` (CI) each runs once, on a 10,000-event population.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bench import es_baselines as es
from bench.events import Stores, Waker, open_stores, ours_wake, populate, quantile, raw_wake

OURS = ["persistence"]
WRITERS = [*OURS, "eventsourcing", "sqlite", "raw_psycopg"]
PER_THREAD = 25


@pytest.fixture(scope="module")
def stores(url: str) -> Iterator[Stores]:
    with open_stores(url) as opened:
        yield opened


@pytest.fixture(scope="module")
def populated(stores: Stores, request: pytest.FixtureRequest) -> Stores:
    """100,000 events in every store (10,000 when timing is disabled, as on CI)."""
    quick = request.config.getoption("benchmark_disable")
    populate(stores, 10_000 if quick else es.POPULATION)
    return stores


def rounds(request: pytest.FixtureRequest, timed: int) -> int:
    return 1 if request.config.getoption("benchmark_disable") else timed


@pytest.mark.parametrize("variant", WRITERS)
def test_es_append_8_threads(
    benchmark: Any, variant: str, stores: Stores, request: pytest.FixtureRequest
) -> None:
    """8 threads, each appending 25 single events to an aggregate of its own (200 commits)."""
    benchmark.group = "es_append_8_threads"
    sourcing = stores.eventsourcing
    assert sourcing is not None
    append: es.Appender
    if variant == "persistence":
        db = stores.db
        append = lambda t, a, s: es.ours_append(db, a, s, 1)  # noqa: E731
    elif variant == "eventsourcing":
        append = lambda t, a, s: sourcing.append(a, s, 1)  # noqa: E731
    elif variant == "sqlite":
        append = lambda t, a, s: es.sqlite_append(stores.sqlite[t], a, s, 1)  # noqa: E731
    else:
        append = lambda t, a, s: es.raw_append(stores.raw[t], a, s, 1)  # noqa: E731
    benchmark.pedantic(
        es.threaded_appends,
        setup=lambda: ((append, es.run_prefix(), PER_THREAD), {}),
        rounds=rounds(request, 5),
    )


@pytest.mark.parametrize("variant", WRITERS)
def test_es_append_batch_100(
    benchmark: Any, variant: str, stores: Stores, request: pytest.FixtureRequest
) -> None:
    """One append of 100 events to a new aggregate (one multi-row INSERT for raw and SQLite)."""
    benchmark.group = "es_append_batch_100"
    sourcing = stores.eventsourcing
    assert sourcing is not None
    append: Callable[[str], int]
    if variant == "persistence":
        db = stores.db
        append = lambda a: es.ours_append(db, a, 1, es.BATCH)  # noqa: E731
    elif variant == "eventsourcing":
        append = lambda a: sourcing.append(a, 1, es.BATCH)  # noqa: E731
    elif variant == "sqlite":
        append = lambda a: es.sqlite_append(stores.sqlite[0], a, 1, es.BATCH)  # noqa: E731
    else:
        append = lambda a: es.raw_append(stores.raw[0], a, 1, es.BATCH)  # noqa: E731
    written = benchmark.pedantic(
        append, setup=lambda: ((es.run_prefix(),), {}), rounds=rounds(request, 50)
    )
    assert written == es.BATCH


READERS = [*OURS, "eventsourcing", "sqlite", "raw_psycopg"]


@pytest.mark.parametrize("variant", READERS)
def test_es_read_all_catch_up(
    benchmark: Any, variant: str, populated: Stores, request: pytest.FixtureRequest
) -> None:
    """A reader catching up from position 0, 1,000 events a page, payloads decoded (the raw
    fetch reads the event store's own rows when it exists)."""
    benchmark.group = "es_read_all_catch_up"
    total, sourcing = populated.population, populated.eventsourcing
    assert sourcing is not None
    read: Callable[[], int]
    if variant == "persistence":
        db = populated.db
        read = lambda: es.ours_catch_up(db, total)  # noqa: E731
    elif variant == "eventsourcing":
        read = lambda: sourcing.catch_up(total)  # noqa: E731
    elif variant == "sqlite":
        read = lambda: es.sqlite_catch_up(populated.sqlite[0], total)  # noqa: E731
    else:
        raw, table = populated.raw[0], populated.read_table
        read = lambda: es.raw_catch_up(raw, table, total)  # noqa: E731
    assert benchmark.pedantic(read, rounds=rounds(request, 3)) == total


@pytest.mark.parametrize("variant", READERS)
def test_es_load_1000(
    benchmark: Any, variant: str, populated: Stores, request: pytest.FixtureRequest
) -> None:
    """One aggregate's 1,000 events, in sequence order, payloads decoded."""
    benchmark.group = "es_load_1000"
    sourcing = populated.eventsourcing
    assert sourcing is not None
    target = es.population_ids(populated.population_prefix, es.LOAD_SIZE)[0]
    load: Callable[[], int]
    if variant == "persistence":
        db = populated.db
        load = lambda: es.ours_load(db, target)  # noqa: E731
    elif variant == "eventsourcing":
        load = lambda: sourcing.load(target)  # noqa: E731
    elif variant == "sqlite":
        load = lambda: es.sqlite_load(populated.sqlite[0], target)  # noqa: E731
    else:
        raw, table = populated.raw[0], populated.read_table
        load = lambda: es.raw_load(raw, table, target)  # noqa: E731
    assert benchmark.pedantic(load, rounds=rounds(request, 20)) == es.LOAD_SIZE


@pytest.mark.parametrize("variant", [*OURS, "raw_listen_notify"])
def test_es_wake_up(
    benchmark: Any, variant: str, stores: Stores, request: pytest.FixtureRequest
) -> None:
    """A waiter blocked on wait_for (raw: LISTEN) in another thread, then one append: the time
    is the whole cycle (1-4 ms let into the wait, the append, the wake-up); the wake-up alone,
    append return to wait_for return, is in extra_info (p50, p99)."""
    benchmark.group = "es_wake_up"
    append, wait, close = ours_wake(stores.db) if variant == "persistence" else raw_wake(stores.url)
    waker = Waker(append, wait)
    try:
        benchmark.pedantic(waker.cycle, rounds=rounds(request, 200))
    finally:
        waker.close()
        close()
    benchmark.extra_info["wake_p50_ms"] = quantile(waker.latencies, 0.5) * 1000
    benchmark.extra_info["wake_p99_ms"] = quantile(waker.latencies, 0.99) * 1000
    assert (waker.timeouts, len(waker.latencies)) == (0, rounds(request, 200))
