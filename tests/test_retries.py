"""Retries after an ambiguous failure, and order ids: what a repeat returns, what is refused.

A fill recorded again returns what the first call did (the stored id, the execution the fill
started or first went into, ``already_stored``); the same key with other values is refused. A
reply lost for real (the connection cut after the server committed) is retried the same way.
Order ids that the models refuse are refused by ``update_status`` and ``complete`` too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import attrs
import psycopg
import pytest

from persistence import (
    Conflict,
    DatabaseUnavailable,
    Execution,
    ExecutionStatus,
    Instruction,
    Settings,
    TradeStatus,
    ValidationError,
    migrate,
)
from persistence.migrate import load_migrations
from persistence.models import MAX_SHARES
from tests.factories import make_fill, make_trade
from tests.support import SilentProxy
from tests.test_batching import violations

D = Decimal


# --- a repeated fill returns what the first call did ------------------------------------------


def test_a_repeated_fill_returns_the_stored_id_and_the_execution_it_started(
    db: Any, emptied_url: str
) -> None:
    fill = make_fill("1.5")
    first = db.fills.record(fill)
    assert first.already_stored is False
    assert first.execution is not None and first.execution.shares == 1
    for _ in range(2):
        again = db.fills.record(fill)
        assert again.already_stored is True
        assert (again.trade_id, again.execution) == (first.trade_id, first.execution)
    # nothing changed: one fill, 0.5 still waiting, the one execution still pending
    assert [f.id for f in db.fills.list()] == [first.trade_id]
    assert db.accumulators.get("AAPL").accumulated_long == D("0.5")
    assert db.executions.pending() == [first.execution]
    assert violations(emptied_url) == {}


def test_a_repeated_fill_that_started_nothing_returns_its_first_execution_or_none(
    db: Any, emptied_url: str
) -> None:
    fill = make_fill("0.4")
    first = db.fills.record(fill)
    assert first.execution is None
    again = db.fills.record(fill)
    assert (again.trade_id, again.execution, again.already_stored) == (first.trade_id, None, True)
    # a later fill starts an execution that this one is part of: a retry now names it
    later = db.fills.record(make_fill("0.7"))
    started = later.execution
    assert [k.trade_id for k in db.executions.links(started.id)] == [
        first.trade_id,
        later.trade_id,
    ]
    again = db.fills.record(fill)
    assert (again.trade_id, again.execution, again.already_stored) == (
        first.trade_id,
        started,
        True,
    )
    assert violations(emptied_url) == {}


def test_a_retry_after_the_execution_was_completed_returns_it_as_it_is_now(
    db: Any, emptied_url: str
) -> None:
    fill = make_fill("1.2")
    first = db.fills.record(fill)
    completed = db.executions.complete(first.execution.id, order_id="SCH-1", price_cents=15_025)
    again = db.fills.record(fill)
    assert again.already_stored and again.trade_id == first.trade_id
    assert again.execution == completed  # the stored row as it is now, not as it was
    assert again.execution.status is ExecutionStatus.COMPLETED
    assert violations(emptied_url) == {}


def test_a_retry_after_the_execution_failed_returns_the_failed_one_not_its_successor(
    db: Any, emptied_url: str
) -> None:
    fill = make_fill("1.2")
    first = db.fills.record(fill)
    failed = db.executions.fail(first.execution.id)
    # the shares went back to the fill and the next execution started at once, from it again
    [successor] = db.executions.pending()
    assert [k.trade_id for k in db.executions.links(successor.id)] == [first.trade_id]
    again = db.fills.record(fill)
    assert again.already_stored and again.trade_id == first.trade_id
    assert again.execution == failed and again.execution.status is ExecutionStatus.FAILED
    assert violations(emptied_url) == {}


def test_a_fill_split_across_two_executions_repeats_the_first(db: Any, emptied_url: str) -> None:
    db.fills.record(make_fill("0.6"))
    split = make_fill("1.6")
    recorded = db.fills.record(split)  # 2.2 waiting: 2 shares, 0.6 + 1.4 of this fill
    first = recorded.execution
    assert first.shares == 2
    db.executions.complete(first.id, order_id="SCH-1", price_cents=1)
    later = make_fill("0.9")
    recorded_later = db.fills.record(later)  # 0.2 left of the split fill + 0.9: 1 share
    second = recorded_later.execution
    assert [(k.trade_id, k.contributed_shares) for k in db.executions.links(second.id)] == [
        (recorded.trade_id, D("0.2")),
        (recorded_later.trade_id, D("0.8")),
    ]
    # the split fill repeats the execution it started, not the later one it is also in
    again = db.fills.record(split)
    assert (again.trade_id, again.execution.id) == (recorded.trade_id, first.id)
    assert again.execution.status is ExecutionStatus.COMPLETED
    # and the fill that started the second one repeats that one
    assert db.fills.record(later).execution == second
    assert violations(emptied_url) == {}


def test_a_fill_beyond_the_share_cap_repeats_the_execution_it_started(
    db: Any, emptied_url: str
) -> None:
    huge = make_fill(D(MAX_SHARES) + D("1000.5"))
    first = db.fills.record(huge)
    assert first.execution.shares == MAX_SHARES  # the rest waits for the next execution
    waiting_fill = make_fill("0.5")
    waiting = db.fills.record(waiting_fill)  # one is pending: starts nothing
    assert waiting.execution is None
    db.executions.complete(first.execution.id, order_id="SCH-1", price_cents=1)
    [second] = db.executions.pending()
    assert second.shares == 1001  # the rest of the huge fill and the waiting 0.5
    again = db.fills.record(huge)
    assert again.trade_id == first.trade_id and again.execution.id == first.execution.id
    # the waiting fill started nothing: its retry names the first execution it went into
    assert db.fills.record(waiting_fill).execution == second
    assert violations(emptied_url) == {}


def test_a_retry_of_an_equal_amount_and_another_created_at_is_a_retry(db: Any) -> None:
    fill = make_fill("1.5", created_at=datetime(2026, 1, 1, tzinfo=UTC))
    first = db.fills.record(fill)
    # 1.50 is 1.5, and created_at is when the fill was stored, not part of the event
    same = attrs.evolve(fill, amount=D("1.50"), created_at=None)
    again = db.fills.record(same)
    assert (again.trade_id, again.execution, again.already_stored) == (
        first.trade_id,
        first.execution,
        True,
    )
    assert db.fills.get(fill.tx_hash, fill.log_index).created_at == fill.created_at


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("symbol", "MSFT"),
        ("amount", D("1.6")),
        ("direction", Instruction.SELL),
        ("price_usdc", D("150.26")),
    ],
)
def test_the_same_key_with_other_values_is_a_conflict_and_writes_nothing(
    db: Any, emptied_url: str, field: str, value: Any
) -> None:
    fill = make_fill("1.5", log_index=7)
    first = db.fills.record(fill)
    before = (db.fills.list(), db.accumulators.list(), db.executions.pending())
    with pytest.raises(Conflict) as refused:
        db.fills.record(attrs.evolve(fill, **{field: value}))
    message = str(refused.value)
    assert fill.tx_hash in message and "log_index 7" in message
    assert f"{field} {value} (stored: {getattr(fill, field)})" in message
    assert [
        name for name in ("symbol", "amount", "direction", "price_usdc") if name in message
    ] == [field]
    assert (db.fills.list(), db.accumulators.list(), db.executions.pending()) == before
    # the stored fill is untouched, and a true retry still works
    again = db.fills.record(fill)
    assert (again.trade_id, again.execution, again.already_stored) == (
        first.trade_id,
        first.execution,
        True,
    )
    assert violations(emptied_url) == {}


def test_a_retry_inside_a_transaction_returns_the_same(db: Any) -> None:
    fill = make_fill("2.25")
    with db.transaction() as tx:
        first = tx.fills.record(fill)
        again = tx.fills.record(fill)
    assert (again.trade_id, again.execution, again.already_stored) == (
        first.trade_id,
        first.execution,
        True,
    )
    assert db.fills.record(fill) == again


def record_fill_definition(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_get_functiondef('record_fill'::regproc)").fetchone()
    assert row is not None
    return str(row[0])


def test_migration_0005_changes_record_fill_and_its_down_restores_0002s(
    empty_database_url: str,
) -> None:
    settings = Settings(url=empty_database_url)
    before = max(m.version for m in load_migrations() if m.version < 5)
    migrate.apply(settings, target=before)
    original = record_fill_definition(empty_database_url)
    assert "already_stored" not in original
    migrate.apply(settings, target=5)
    assert "already_stored boolean" in record_fill_definition(empty_database_url)
    migrate.rollback(settings, target=before)
    assert record_fill_definition(empty_database_url) == original


# --- a reply lost for real ---------------------------------------------------------------------


@pytest.fixture
def cutter(emptied_url: str) -> Iterator[SilentProxy]:
    proxy = SilentProxy(emptied_url)
    yield proxy
    proxy.close()


def stored_fill_id(url: str, tx_hash: str) -> int | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id FROM onchain_trades WHERE tx_hash = %s", [tx_hash]).fetchone()
    return None if row is None else int(row[0])


def test_a_reply_lost_after_the_commit_is_retried_and_told_what_the_first_call_did(
    emptied_url: str, cutter: SilentProxy, open_database: Callable[..., Any]
) -> None:
    with open_database(cutter.url(emptied_url), min_size=1, max_size=1, connect_timeout=2) as db:
        db.fills.record(make_fill("0.5"))  # 0.5 waiting
        fill = make_fill("0.75")  # 1.25: starts an execution of one share
        outcome: list[Any] = []

        def record() -> None:
            try:
                outcome.append(db.fills.record(fill))
            except Exception as exc:
                outcome.append(exc)

        cutter.swallow_replies = True
        caller = threading.Thread(target=record)
        caller.start()
        deadline = time.monotonic() + 10
        while stored_fill_id(emptied_url, fill.tx_hash) is None:  # committed on the server
            assert time.monotonic() < deadline, "the fill never landed"
            time.sleep(0.01)
        cutter.cut()  # the connection drops after the commit: the reply is lost
        caller.join(10)
        [failed] = outcome
        assert isinstance(failed, DatabaseUnavailable), failed
        message = str(failed)
        assert "connection failed" in message
        assert "may have landed" in message and "retrying it is safe" in message

        cutter.swallow_replies = False
        retried = db.fills.record(fill)
        assert retried.already_stored is True
        assert retried.trade_id == stored_fill_id(emptied_url, fill.tx_hash)
        [started] = db.executions.pending()
        assert retried.execution == started and started.shares == 1
        assert [k.trade_id for k in db.executions.links(started.id)] == [1, retried.trade_id]
        assert db.accumulators.get("AAPL").accumulated_long == D("0.25")  # recorded once
    assert violations(emptied_url) == {}


# --- order ids: the models' rule everywhere ----------------------------------------------------

BAD_ORDER_IDS = [" 123 ", "1\n", "\t1", "", "x" * 257, "1\x00"]


@pytest.mark.parametrize("order_id", BAD_ORDER_IDS)
def test_update_status_refuses_an_order_id_the_trade_model_refuses(db: Any, order_id: str) -> None:
    trade = make_trade()
    db.trades.insert(trade)
    with pytest.raises(ValidationError) as refused:
        db.trades.update_status(trade.tx_hash, 0, TradeStatus.COMPLETED, schwab_order_id=order_id)
    # the same rule as the model's, word for word
    stored = db.trades.get(trade.tx_hash, 0)
    with pytest.raises(ValidationError) as by_model:
        attrs.evolve(
            stored,
            status=TradeStatus.COMPLETED,
            completed_at=datetime.now(UTC),
            schwab_order_id=order_id,
        )
    assert str(refused.value) == str(by_model.value)
    assert str(refused.value).startswith("schwab_order_id=")
    # nothing written
    assert stored.status is TradeStatus.PENDING and stored.schwab_order_id is None


def test_update_status_keeps_accepting_what_the_model_accepts(db: Any) -> None:
    trade = make_trade()
    db.trades.insert(trade)
    longest = "A" * 256
    done = db.trades.update_status(trade.tx_hash, 0, TradeStatus.COMPLETED, schwab_order_id=longest)
    assert done.schwab_order_id == longest
    # a loaded trade can be evolved: what got in is what the model accepts
    assert attrs.evolve(done, schwab_order_id="B-1").schwab_order_id == "B-1"


@pytest.mark.parametrize("order_id", BAD_ORDER_IDS)
def test_complete_refuses_an_order_id_the_execution_model_refuses(db: Any, order_id: str) -> None:
    execution = db.fills.record(make_fill("1")).execution
    with pytest.raises(ValidationError) as refused:
        db.executions.complete(execution.id, order_id=order_id, price_cents=1)
    with pytest.raises(ValidationError) as by_model:
        Execution(
            execution.id,
            execution.symbol,
            execution.shares,
            execution.direction,
            ExecutionStatus.COMPLETED,
            order_id,
            D(1),
            datetime.now(UTC),
            execution.created_at,
        )
    assert str(refused.value) == str(by_model.value)
    assert str(refused.value).startswith("order_id=")
    assert db.executions.get(execution.id) == execution  # still PENDING, nothing written
    longest = "A" * 256
    assert db.executions.complete(execution.id, order_id=longest, price_cents=1).order_id == (
        longest
    )
