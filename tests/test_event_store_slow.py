"""The event store under failure (issue #27): a projector killed mid-batch, a projection
through PgBouncer in transaction mode. Slow: processes of their own and a proxy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from persistence import Database, RecordedEvent
from tests import support
from tests.event_store_support import event, read_everything, store_url
from tests.test_production import pgbouncer

__all__ = ["pgbouncer", "store_url"]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("store_url")]

EFFECTS = "es_slow_effects"

# A projector that writes each event's effect, then stops inside the batch (before the
# commit) and waits to be killed.
PROJECTOR = textwrap.dedent(
    """
    import sys, time
    from persistence import Database
    url, effects, marker = sys.argv[1:4]

    def handle(tx, events):
        for e in events:
            tx.connection.execute(f"INSERT INTO {effects} VALUES (%s)", (e.position,))
        open(marker, "w").close()
        time.sleep(600)

    with Database.connect(url) as db:
        db.event_store.project("ledger", handle, limit=100)
    """
)


@pytest.fixture
def effects(store_url: str) -> Iterator[str]:
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {EFFECTS}")
        conn.execute(f"CREATE TABLE {EFFECTS} (position bigint PRIMARY KEY)")
    yield store_url
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {EFFECTS}")


def effect_rows(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(f"SELECT position FROM {EFFECTS} ORDER BY 1")]


def handle(tx: Any, events: list[RecordedEvent]) -> None:
    for e in events:
        tx.connection.execute(f"INSERT INTO {EFFECTS} VALUES (%s)", (e.position,))


def test_a_projector_killed_mid_batch_leaves_nothing_and_a_rerun_handles_each_once(
    _session_db: Database, effects: str, tmp_path: Path
) -> None:
    db = _session_db
    appended = [
        e
        for n in range(30)
        for e in db.event_store.append("A", f"a{n}", [event()], expected_sequence=0)
    ]
    read_everything(db, count=30)
    marker = tmp_path / "in-batch"
    script = tmp_path / "projector.py"
    script.write_text(PROJECTOR)
    child = subprocess.Popen(
        [sys.executable, str(script), effects, EFFECTS, str(marker)],
        cwd=support.ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert child.poll() is None and time.monotonic() < deadline, "the projector never ran"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    # the server notices the dead client and rolls its transaction back
    deadline = time.monotonic() + 30
    while True:
        with psycopg.connect(effects, autocommit=True) as conn:
            locked = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'persistence' "
                "AND state LIKE 'idle in transaction%%' AND datname = current_database()"
            ).fetchone()[0]
        if not locked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert effect_rows(effects) == []
    with db.transaction() as tx:
        assert tx.checkpoints.get("ledger") == 0
    assert db.event_store.project("ledger", handle, limit=100) == 30
    assert db.event_store.project("ledger", handle, limit=100) == 0
    assert effect_rows(effects) == [e.position for e in appended]


def test_a_projection_through_pgbouncer_in_transaction_mode_misses_nothing(
    pgbouncer: str, store_url: str, effects: str
) -> None:
    """LISTEN does not survive transaction pooling (the session is handed to other clients),
    so notifications are lost: wait_for finds the events by polling, and nothing is missed."""
    support.set_session_defaults(store_url)
    host, port = pgbouncer.rsplit(":", 1)
    proxied = make_conninfo(store_url, host=host, port=port)
    with Database.connect(proxied, prepare_threshold=None) as db:
        handled = 0
        after = 0
        for round_ in range(5):
            for n in range(4):
                db.event_store.append("P", f"{round_}-{n}", [event()], expected_sequence=0)
            deadline = time.monotonic() + 30
            while handled < 4 * (round_ + 1):
                assert time.monotonic() < deadline, f"{handled} handled"
                assert db.event_store.wait_for(after, timeout=10, poll_interval=0.2)
                handled += db.event_store.project("ledger", handle)
                with db.transaction() as tx:
                    after = tx.checkpoints.get("ledger")
        assert handled == 20
    assert len(effect_rows(effects)) == 20
