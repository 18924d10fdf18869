"""A stalled transaction block: the server ends it after the idle-in-transaction timeout.

A worker that claims an event or records a fill inside a transaction and then stands still (a
hung broker call, a debugger, SIGSTOP) holds row locks; the session setting
idle_in_transaction_session_timeout (PERSISTENCE_IDLE_IN_TRANSACTION_TIMEOUT) bounds that. The
others then proceed, and the stalled block, when it wakes, gets DatabaseUnavailable saying why
with nothing of it written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from persistence import Settings
from persistence.errors import DatabaseUnavailable
from tests.factories import make_fill, tx_hash
from tests.support import environment_without

T = TypeVar("T")

BOUND = 0.5  # seconds: the stalled sessions' idle-in-transaction timeout
# the stalled block's error says what happened and what bounds it
STALLED = (
    r"sat idle longer than the idle-in-transaction timeout "
    r"\(PERSISTENCE_IDLE_IN_TRANSACTION_TIMEOUT\).*rolled the transaction back: "
    r"nothing of the block was written"
)


def eventually(attempt: Callable[[], T | None], within: float) -> tuple[T, float]:
    """The first result of ``attempt`` that is not None, and the seconds it took."""
    started = time.monotonic()
    while True:
        result = attempt()
        elapsed = time.monotonic() - started
        if result is not None:
            return result, elapsed
        assert elapsed < within, f"nothing within {within} s"
        time.sleep(0.05)


def test_the_setting_defaults_to_a_minute_and_reads_the_environment() -> None:
    assert Settings().idle_in_transaction_timeout == 60.0
    env = {"PERSISTENCE_IDLE_IN_TRANSACTION_TIMEOUT": "2.5"}
    assert Settings.from_env(env).idle_in_transaction_timeout == 2.5
    assert Settings.from_env(env, idle_in_transaction_timeout=0).idle_in_transaction_timeout == 0


def test_a_stalled_claim_is_released_and_the_stalled_block_fails(
    open_database: Callable[..., Any], emptied_url: str
) -> None:
    with open_database(emptied_url, idle_in_transaction_timeout=BOUND) as db:
        db.events.enqueue(tx_hash(), 0, 1, {"n": 1})

        def claim_and_process() -> int | None:
            with db.transaction() as other:
                event = other.events.claim_next()
                if event is not None:
                    other.events.mark_processed(event.id)
                return None if event is None else event.id  # type: ignore[no-any-return]

        with pytest.raises(DatabaseUnavailable, match=STALLED), db.transaction() as stalled:
            claimed = stalled.events.claim_next()
            assert claimed is not None
            assert claim_and_process() is None  # held by the stalled block's row lock
            # the stalled block stands still; another worker gets the event once it is ended
            processed, waited = eventually(claim_and_process, within=5)
            assert processed == claimed.id
            assert BOUND * 0.8 < waited < BOUND + 4
            stalled.events.mark_processed(claimed.id)  # the stalled worker wakes
        assert db.events.count_unprocessed() == 0
        assert db.ping() > 0  # the pool carries on with fresh connections


def test_a_stalled_fill_frees_its_symbol_and_its_commit_fails(
    open_database: Callable[..., Any], emptied_url: str
) -> None:
    stalled_fill, other_fill = make_fill("0.5"), make_fill("0.25")
    with open_database(emptied_url, idle_in_transaction_timeout=BOUND) as db:
        with pytest.raises(DatabaseUnavailable, match=STALLED), db.transaction() as stalled:
            assert stalled.fills.record(stalled_fill).trade_id is not None
            # the symbol's accumulator is locked by the stalled block until the server ends it
            started = time.monotonic()
            assert db.fills.record(other_fill).trade_id is not None
            assert time.monotonic() - started < BOUND + 4
            time.sleep(BOUND)  # still standing still; the commit on leaving the block fails
        assert db.fills.get(stalled_fill.tx_hash, 0) is None
        assert db.fills.get(other_fill.tx_hash, 0) is not None
        [accumulator] = db.accumulators.list()
        assert accumulator.symbol == "AAPL" and accumulator.accumulated_long == Decimal("0.25")


def test_a_block_that_keeps_working_is_not_ended(
    open_database: Callable[..., Any], emptied_url: str
) -> None:
    """The bound is on idleness, not on the transaction's length."""
    with open_database(emptied_url, idle_in_transaction_timeout=BOUND) as db:
        with db.transaction() as tx:
            for _ in range(6):
                tx.fills.record(make_fill("0.1"))
                time.sleep(BOUND / 3)
        assert len(db.fills.list()) == 6


WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from persistence import AsyncDatabase, Database
    from persistence.errors import DatabaseUnavailable

    def blocking(url):
        with Database.connect(url, idle_in_transaction_timeout=3) as db:
            with db.transaction() as tx:
                event = tx.events.claim_next()
                print(event.id, flush=True)
                time.sleep(0.5)  # SIGSTOP arrives here
                tx.events.mark_processed(event.id)

    async def awaiting(url):
        async with await AsyncDatabase.connect(url, idle_in_transaction_timeout=3) as db:
            async with db.transaction() as tx:
                event = await tx.events.claim_next()
                print(event.id, flush=True)
                time.sleep(0.5)  # SIGSTOP arrives here
                await tx.events.mark_processed(event.id)

    try:
        blocking(sys.argv[1]) if sys.argv[2] == "sync" else asyncio.run(awaiting(sys.argv[1]))
    except DatabaseUnavailable as exc:
        print(exc, flush=True)
        sys.exit(3)
    """
)


@pytest.mark.slow
def test_a_stopped_worker_process_releases_its_event_within_seconds(
    db: Any, emptied_url: str, api: str
) -> None:
    """The issue's probe: a worker claims, is SIGSTOPped; with the bound at 3 s the event is
    claimable again within ~10 s, and the worker, continued, fails with the reason."""
    db.events.enqueue(tx_hash(), 0, 1, {"n": 1})
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, emptied_url, api],
        stdout=subprocess.PIPE,
        text=True,
        env=environment_without("DATABASE_URL"),
    )
    try:
        assert worker.stdout is not None
        claimed = int(worker.stdout.readline())
        os.kill(worker.pid, signal.SIGSTOP)

        def claim() -> int | None:
            with db.transaction() as tx:
                event = tx.events.claim_next()
                if event is not None:
                    tx.events.mark_processed(event.id)
                return None if event is None else event.id  # type: ignore[no-any-return]

        processed, waited = eventually(claim, within=10)
        assert processed == claimed and waited < 10
        os.kill(worker.pid, signal.SIGCONT)
        out, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)
            worker.kill()
            worker.wait()
    assert worker.returncode == 3, out
    assert "PERSISTENCE_IDLE_IN_TRANSACTION_TIMEOUT" in out and "nothing of the block" in out
    assert db.events.count_unprocessed() == 0
