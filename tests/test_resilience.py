"""Faults against a real server: stopped, killed, connections terminated, pool exhausted.

These use a throwaway embedded cluster (the ``scratch_server`` fixture) that a test may stop,
start and SIGKILL; the server under the rest of the suite is never disturbed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from persistence import Database, DatabaseUnavailable, Trade
from tests.factories import make_trade
from tests.support import environment_without, every_connection_busy

# an operation may take this long while the server is down: probing a refused socket is
# immediate, so this bounds hangs, it does not measure speed
FAIL_FAST = 3.0


@pytest.fixture
def fault_db(scratch_url: str, open_database: Callable[..., Any]) -> Iterator[Database]:
    """A database on the throwaway server, on the API under test."""
    with open_database(scratch_url, min_size=2, max_size=4, acquire_timeout=5) as db:
        yield db


def count_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM trades").fetchone()[0]  # type: ignore[index]


def test_server_stopped_during_a_burst_of_inserts(
    scratch_server: Any, scratch_url: str, fault_db: Database
) -> None:
    attempted: list[Trade] = []
    acknowledged: list[Trade] = []
    failures: list[tuple[float, BaseException]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def insert_forever(worker: int) -> None:
        index = 0
        while not stop.is_set():
            trade = make_trade(log_index=worker * 1_000_000 + index)
            index += 1
            with lock:
                attempted.append(trade)
            started = time.monotonic()
            try:
                fault_db.trades.insert(trade)
                with lock:
                    acknowledged.append(trade)
            except DatabaseUnavailable as exc:
                with lock:
                    failures.append((time.monotonic() - started, exc))
                time.sleep(0.01)
            except Exception as exc:  # anything else is a bug, reported below
                with lock:
                    failures.append((time.monotonic() - started, exc))

    workers = [threading.Thread(target=insert_forever, args=(n,)) for n in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    scratch_server.stop(mode="fast")
    time.sleep(1.0)
    scratch_server.start()
    recovered_by = time.monotonic() + 10
    while time.monotonic() < recovered_by:
        try:
            fault_db.ping()
            break
        except DatabaseUnavailable:
            time.sleep(0.05)
    time.sleep(0.3)
    stop.set()
    for worker in workers:
        worker.join(30)

    assert failures, "the stop was not noticed"
    assert all(isinstance(exc, DatabaseUnavailable) for _, exc in failures), failures[:3]
    assert max(elapsed for elapsed, _ in failures) < FAIL_FAST
    # the pool recovered by itself: the same handle works
    assert fault_db.ping() > 0
    # every acknowledged insert is there; retrying every attempt duplicates nothing
    for trade in acknowledged:
        assert fault_db.trades.get(trade.tx_hash, trade.log_index) is not None
    fault_db.trades.insert_many(attempted)
    assert count_rows(scratch_url) == len({(t.tx_hash, t.log_index) for t in attempted})


def test_server_killed_mid_transaction_loses_the_whole_transaction(
    scratch_server: Any, scratch_url: str, fault_db: Database
) -> None:
    kept = make_trade()
    fault_db.trades.insert(kept)
    with pytest.raises(DatabaseUnavailable), fault_db.transaction() as tx:
        for index in range(50):
            tx.trades.insert(make_trade(log_index=index))
        scratch_server.kill()
        time.sleep(0.3)
        tx.trades.insert(make_trade(log_index=99))
    scratch_server.start()
    assert count_rows(scratch_url) == 1
    assert fault_db.trades.get(kept.tx_hash, 0) is not None


def test_a_terminated_connection_is_replaced(
    scratch_url: str, open_database: Callable[..., Any]
) -> None:
    with open_database(scratch_url, min_size=1, max_size=1) as db:
        with db.pool.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(scratch_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.1)
        assert db.trades.count() == 0  # the next operation gets a fresh connection
        with db.pool.connection() as conn:
            assert conn.info.backend_pid != pid


def test_an_exhausted_pool_times_out_with_a_clear_error(
    scratch_url: str, open_database: Callable[..., Any]
) -> None:
    with open_database(scratch_url, min_size=1, max_size=1, acquire_timeout=0.5) as db:
        with every_connection_busy(db):
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match="pool is exhausted"):
                db.trades.count()
            assert time.monotonic() - started < 0.5 + 2
        assert db.trades.count() == 0


def test_close_drains_in_flight_work_and_releases_connections(scratch_url: str) -> None:
    db = Database.connect(scratch_url, min_size=2, application_name="drain-test")
    trade = make_trade()
    done = threading.Event()
    outcome: list[object] = []

    def slow_write() -> None:
        try:
            with db.transaction() as tx:
                done.set()
                tx.connection.execute("SELECT pg_sleep(0.5)")
                outcome.append(tx.trades.insert(trade))
        except Exception as exc:
            outcome.append(exc)

    writer = threading.Thread(target=slow_write)
    writer.start()
    done.wait(5)
    db.close()
    writer.join(10)
    assert isinstance(outcome[0], int), outcome
    with psycopg.connect(scratch_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'drain-test'"
        ).fetchone()
        assert left == (0,)
        assert conn.execute("SELECT count(*) FROM trades").fetchone() == (1,)


def test_data_survives_a_server_restart_and_a_new_process(
    scratch_server: Any, scratch_url: str
) -> None:
    trade = make_trade()
    with Database.connect(scratch_url) as db:
        db.trades.insert(trade)
    scratch_server.stop()
    scratch_server.start()
    code = (
        "import sys\nfrom persistence import Database\n"
        "with Database.connect(sys.argv[1]) as db:\n"
        "    print(db.trades.get(sys.argv[2], 0).onchain_input_amount)"
    )
    env = environment_without("DATABASE_URL")
    result = subprocess.run(
        [sys.executable, "-c", code, scratch_url, trade.tx_hash],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.stdout.strip() == "150.250000000000000001", result.stderr


def test_connect_without_wait_fails_at_once_when_the_server_is_down(
    scratch_server: Any, scratch_url: str, open_database: Callable[..., Any]
) -> None:
    scratch_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="cannot connect"), open_database(scratch_url):
            pass
        assert time.monotonic() - started < FAIL_FAST
    finally:
        scratch_server.start()


@pytest.mark.slow
def test_soak_the_bot_mix_across_two_restarts(scratch_server: Any, scratch_url: str) -> None:
    """Several threads insert, read, complete and list for ~20 s while the server restarts twice."""
    acknowledged: list[Trade] = []
    completed: set[tuple[str, int]] = set()
    errors: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()

    with Database.connect(scratch_url, min_size=2, max_size=6, acquire_timeout=5) as db:

        def bot(worker: int) -> None:
            index = 0
            while not stop.is_set():
                trade = make_trade(log_index=worker * 1_000_000 + index)
                index += 1
                try:
                    db.trades.insert(trade)
                    with lock:
                        acknowledged.append(trade)
                    assert db.trades.get(trade.tx_hash, trade.log_index) is not None
                    if index % 3 == 0:
                        db.trades.update_status(
                            trade.tx_hash, trade.log_index, "COMPLETED", schwab_order_id=f"O{index}"
                        )
                        with lock:
                            completed.add((trade.tx_hash, trade.log_index))
                    if index % 10 == 0:
                        db.trades.list(status="PENDING", limit=50)
                except DatabaseUnavailable:
                    time.sleep(0.05)
                except Exception as exc:
                    with lock:
                        errors.append(exc)

        workers = [threading.Thread(target=bot, args=(n,)) for n in range(4)]
        for worker in workers:
            worker.start()
        for _ in range(2):
            time.sleep(6)
            scratch_server.stop(mode="fast")
            time.sleep(1)
            scratch_server.start()
        time.sleep(6)
        stop.set()
        for worker in workers:
            worker.join(30)

        assert errors == []
        assert len(acknowledged) > 100
        for trade in acknowledged:
            saved = db.trades.get(trade.tx_hash, trade.log_index)
            assert saved is not None
            if (trade.tx_hash, trade.log_index) in completed:
                assert saved.status == "COMPLETED"
    assert count_rows(scratch_url) == len(acknowledged)


def test_health_check_reports_a_server_that_went_away(
    scratch_server: Any, scratch_url: str, open_database: Callable[..., Any]
) -> None:
    with open_database(scratch_url, min_size=2) as db:
        assert db.health_check().status == "healthy"
        scratch_server.stop(mode="fast")
        try:
            started = time.monotonic()
            report = db.health_check(timeout=2)
            assert time.monotonic() - started < 2 + 1
            assert report.status == "unhealthy"
            assert report.error is not None and "connect" in report.error
        finally:
            scratch_server.start()
        assert db.health_check().status == "healthy"
