"""Time to detect a stopped server, and to recover once it is back.

Run: ``python bench/measure_faults.py``.

Runs an embedded cluster of its own, stops (fast shutdown) and restarts it ROUNDS times under an
open Database, and prints median and maximum of each figure. docs/operations.md quotes it.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable

from persistence import Database, DatabaseUnavailable, Settings, migrate
from persistence.embedded import EmbeddedServer

ROUNDS = 10


def elapsed_until_failure(operation: Callable[[], object]) -> float | None:
    started = time.perf_counter()
    try:
        operation()
    except DatabaseUnavailable:
        return time.perf_counter() - started
    return None


def summary(samples: list[float]) -> str:
    return (
        f"median {statistics.median(samples) * 1000:.1f} ms, "
        f"max {max(samples) * 1000:.1f} ms (n={len(samples)})"
    )


def main() -> None:
    logging.disable(logging.WARNING)
    server = EmbeddedServer(tempfile.mkdtemp() + "/pg").start()
    server.create_database("persistence")
    url = server.url()
    migrate.apply(Settings(url=url))
    first_failure, later_failure, recovery = [], [], []
    try:
        with Database.connect(url, min_size=2, max_size=4) as db:
            for _ in range(ROUNDS):
                db.ping()
                server.stop(mode="fast")
                for samples in (first_failure, later_failure):
                    took = elapsed_until_failure(db.trades.count)
                    if took is not None:
                        samples.append(took)
                server.start()
                started = time.perf_counter()
                while elapsed_until_failure(db.trades.count) is not None:
                    time.sleep(0.001)
                recovery.append(time.perf_counter() - started)
    finally:
        server.stop(mode="immediate")
    print("first operation after the stop fails in:", summary(first_failure))
    print("later operations while down fail in:   ", summary(later_failure))
    print("first success after the server is back:", summary(recovery))


if __name__ == "__main__":
    main()
