"""The batching rules a mutation probe could break unnoticed, pinned exactly; both APIs.

``start_due_execution`` (migration 0002) draws an execution's shares from the side's open
fills, oldest first, while the shares already drawn are below the execution's (``before <
v_shares``): a fill that starts exactly on the boundary gives nothing and must not be linked.
On a tie of whole shares the BUY side goes first. A settled execution and a processed event
stay as they are when the same move is asked for again.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest

from persistence import ExecutionStatus, Instruction, InvalidTransition
from tests.factories import make_fill, tx_hash
from tests.test_batching import violations

D = Decimal


@pytest.fixture
def url(emptied_url: str) -> str:
    return emptied_url


def unlinked(url: str) -> dict[int, Decimal]:
    """Each fill's shares not yet in an execution, by fill id."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, unlinked_shares FROM onchain_trades ORDER BY id")
        return dict(rows.fetchall())


def links_of(db: Any, execution_id: int) -> list[tuple[int, Decimal]]:
    return [(k.trade_id, k.contributed_shares) for k in db.executions.links(execution_id)]


def test_open_fills_ending_on_a_whole_share_are_drawn_exactly(db: Any, url: str) -> None:
    """The probe's sequence 1, 0.5, 0.5, 0.3: the fill after the boundary is not linked."""
    first = db.fills.record(make_fill("1")).execution
    assert first is not None and first.shares == 1
    # behind the pending execution, the next fills reach exactly one share, then go past it
    for amount in ("0.5", "0.5", "0.3"):
        assert db.fills.record(make_fill(amount)).execution is None
    assert db.accumulators.get("AAPL").accumulated_long == D("1.3")

    db.executions.complete(first.id, order_id="SCH-1", price_cents=15_025)
    [second] = db.executions.pending()
    assert (second.symbol, second.shares, second.direction) == ("AAPL", 1, Instruction.BUY)
    assert links_of(db, first.id) == [(1, D("1"))]
    assert links_of(db, second.id) == [(2, D("0.5")), (3, D("0.5"))]  # fill 4 starts at 1.0
    assert unlinked(url) == {1: 0, 2: 0, 3: 0, 4: D("0.3")}
    accumulator = db.accumulators.get("AAPL")
    assert (accumulator.accumulated_long, accumulator.accumulated_short) == (D("0.3"), 0)
    assert accumulator.pending_execution_id == second.id
    assert violations(url) == {}

    # the symbol keeps working: the next whole share starts the next execution
    db.executions.complete(second.id, order_id="SCH-2", price_cents=15_030)
    assert db.executions.pending() == []
    third = db.fills.record(make_fill("0.7")).execution
    assert third is not None and (third.shares, third.direction) == (1, Instruction.BUY)
    assert links_of(db, third.id) == [(4, D("0.3")), (5, D("0.7"))]
    assert unlinked(url) == {1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
    assert db.accumulators.get("AAPL").accumulated_long == 0
    assert violations(url) == {}


def test_a_boundary_after_two_whole_shares_and_a_failure(db: Any, url: str) -> None:
    """Two shares drawn from 1.5 + 0.5 while 0.25 waits behind them; a failure gives the
    shares back to the same fills and the retry stops on the same boundary."""
    first = db.fills.record(make_fill("1", direction="SELL")).execution
    for amount in ("1.5", "0.5", "0.25"):
        db.fills.record(make_fill(amount, direction="SELL"))
    db.executions.complete(first.id, order_id="SCH-1", price_cents=1)
    [second] = db.executions.pending()
    assert (second.shares, second.direction) == (2, Instruction.SELL)
    assert links_of(db, second.id) == [(2, D("1.5")), (3, D("0.5"))]
    assert unlinked(url) == {1: 0, 2: 0, 3: 0, 4: D("0.25")}

    db.executions.fail(second.id)
    [retry] = db.executions.pending()
    assert retry.id != second.id and (retry.shares, retry.direction) == (2, Instruction.SELL)
    assert links_of(db, retry.id) == [(2, D("1.5")), (3, D("0.5"))]
    assert unlinked(url) == {1: 0, 2: 0, 3: 0, 4: D("0.25")}
    assert db.accumulators.get("AAPL").accumulated_short == D("0.25")
    assert violations(url) == {}


def test_a_tie_of_whole_shares_buys_first(db: Any, url: str) -> None:
    """Both sides hold 2 whole shares when the execution becomes due: BUY goes first, although
    the short side holds more in all (2.4 against 2.2)."""
    first = db.fills.record(make_fill("1")).execution
    db.fills.record(make_fill("2.2", direction="BUY"))
    db.fills.record(make_fill("2.4", direction="SELL"))
    accumulator = db.accumulators.get("AAPL")
    assert (accumulator.accumulated_long, accumulator.accumulated_short) == (D("2.2"), D("2.4"))

    db.executions.complete(first.id, order_id="SCH-1", price_cents=1)
    [buy] = db.executions.pending()
    assert (buy.direction, buy.shares) == (Instruction.BUY, 2)
    assert links_of(db, buy.id) == [(2, D("2"))]
    accumulator = db.accumulators.get("AAPL")
    assert (accumulator.accumulated_long, accumulator.accumulated_short) == (D("0.2"), D("2.4"))

    # then the short side's turn
    db.executions.complete(buy.id, order_id="SCH-2", price_cents=1)
    [sell] = db.executions.pending()
    assert (sell.direction, sell.shares) == (Instruction.SELL, 2)
    assert links_of(db, sell.id) == [(3, D("2"))]
    assert violations(url) == {}


def test_more_whole_shares_on_the_short_side_sell_first(db: Any, url: str) -> None:
    """The control for the tie: without one, the side with more whole shares goes first."""
    first = db.fills.record(make_fill("1")).execution
    db.fills.record(make_fill("2.9", direction="BUY"))
    db.fills.record(make_fill("3", direction="SELL"))
    db.executions.complete(first.id, order_id="SCH-1", price_cents=1)
    [sell] = db.executions.pending()
    assert (sell.direction, sell.shares) == (Instruction.SELL, 3)
    assert violations(url) == {}


# --- repeated moves -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        {"order_id": "SCH-1", "price_cents": D("15025.5")},  # another price
        {"order_id": "SCH-1", "price_cents": D("15025.000000000000000001")},  # by 1e-18
        {"order_id": "SCH-2", "price_cents": D("15025")},  # another order id
    ],
)
def test_completing_again_with_other_values_is_refused_and_changes_nothing(
    db: Any, url: str, other: dict[str, Any]
) -> None:
    execution = db.fills.record(make_fill("1.5")).execution
    done = db.executions.complete(execution.id, order_id="SCH-1", price_cents=D("15025"))
    assert (done.status, done.order_id, done.price_cents) == (
        ExecutionStatus.COMPLETED,
        "SCH-1",
        D("15025"),
    )
    with pytest.raises(InvalidTransition, match=f"execution {execution.id} is COMPLETED"):
        db.executions.complete(execution.id, **other)
    assert db.executions.get(execution.id) == done
    assert db.accumulators.get("AAPL").accumulated_long == D("0.5")
    assert violations(url) == {}


def test_completing_again_with_the_same_values_returns_the_stored_execution(
    db: Any, url: str
) -> None:
    execution = db.fills.record(make_fill("1")).execution
    done = db.executions.complete(execution.id, order_id="SCH-1", price_cents=15_025)
    # the same price written otherwise is the same value
    again = db.executions.complete(execution.id, order_id="SCH-1", price_cents=D("15025.000"))
    assert again == done and again.executed_at == done.executed_at
    assert db.executions.get(execution.id) == done
    assert violations(url) == {}


def test_marking_an_event_processed_twice_keeps_the_first_time(db: Any, url: str) -> None:
    event_id = db.events.enqueue(tx_hash(), 0, 7, {"n": 1})
    with db.transaction() as tx:
        assert tx.events.claim_next().id == event_id
        tx.events.mark_processed(event_id)
    with psycopg.connect(url) as conn:
        [(first,)] = conn.execute("SELECT processed_at FROM event_queue").fetchall()
    assert first is not None
    with db.transaction() as tx:  # a worker that repeats the mark, in a transaction of its own
        assert tx.events.mark_processed(event_id) is None
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT processed_at FROM event_queue").fetchall() == [(first,)]
    assert db.events.count_unprocessed() == 0
