"""The Python examples of the README, operations.md and troubleshooting.md, run as written
against the test database (usage.md's and event-store.md's have tests of their own)."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest

from persistence import Database
from tests.support import ROOT, every_connection_busy

DOCS = ROOT / "docs"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def run(block: str, page: Path, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(block, str(page), "exec"), namespace)  # noqa: S102
    return namespace


def test_the_readme_examples_run_and_each_completes_its_own_trade(
    emptied_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync example stores and completes its trade; the async one's `record`, given the
    same event's next log (issue 30, item 1), completes that trade and leaves the first as it
    was."""
    monkeypatch.setenv("DATABASE_URL", emptied_url)
    page = ROOT / "README.md"
    sync, asynchronous = python_blocks(page)
    done = run(sync, page, {"__name__": "readme"})
    run(asynchronous, page, done)
    second = attrs.evolve(done["trade"], log_index=1)
    asyncio.run(done["record"](second))
    with psycopg.connect(emptied_url) as conn:
        trades = conn.execute(
            "SELECT log_index, status, schwab_order_id FROM trades ORDER BY log_index"
        ).fetchall()
    assert trades == [(0, "COMPLETED", "1234"), (1, "COMPLETED", "1234")]


def test_the_operations_examples_run(
    emptied_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The health check as written; the dead-letter listing on a database holding one dead
    letter (its `db`, the bot's, given)."""
    monkeypatch.setenv("DATABASE_URL", emptied_url)
    page = DOCS / "operations.md"
    health, dead_letters = python_blocks(page)
    run(health, page, {"__name__": "operations"})
    status, latency_ms, pending = capsys.readouterr().out.split()
    assert (status, pending) == ("healthy", "0") and float(latency_ms) > 0
    with Database.connect(emptied_url) as db:
        event_id = db.events.enqueue("0x" + "cd" * 32, 3, 7, {"kind": "poison"})
        with psycopg.connect(emptied_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE event_queue SET attempts = 5, last_error = 'handler failed', "
                "last_failed_at = now(), dead_at = now() WHERE id = %s",
                (event_id,),
            )
        done = run(dead_letters, page, {"__name__": "operations", "db": db})
    assert done["count"] == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"{event_id} 0x{'cd' * 32} 3 5 ") and line.endswith(" handler failed")


def test_the_troubleshooting_reporter_logs_an_exhausted_pool(
    emptied_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`report_every`, as written, run beside a pool whose only connection is busy: it logs
    the degraded report, then stops when told."""
    page = DOCS / "troubleshooting.md"
    (block,) = python_blocks(page)
    report_every = run(block, page, {"__name__": "troubleshooting"})["report_every"]
    stop = threading.Event()
    with (
        caplog.at_level(logging.WARNING, logger="bot.health"),
        Database.connect(emptied_url, max_size=1) as db,
        every_connection_busy(db),
    ):
        reporter = threading.Thread(target=report_every, args=(db, 0.05, stop), daemon=True)
        reporter.start()
        for _ in range(100):
            if caplog.records:
                break
            stop.wait(0.05)
        stop.set()
        reporter.join(5)
    assert not reporter.is_alive()
    message = caplog.records[0].getMessage()
    assert message.startswith("database degraded: ") and "the pool is exhausted" in message
