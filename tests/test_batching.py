"""The trade-batching model against PostgreSQL: fills, accumulators, executions, links, queue.

Every behavioural test runs on both APIs (the ``db`` fixture). The invariants are checked by
SQL over the whole store after each scenario, including hypothesis-generated sequences and
races of 8 threads, 8 asyncio tasks and 8 processes on one symbol.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence import (
    Conflict,
    Database,
    ExecutionStatus,
    Fill,
    Instruction,
    InvalidTransition,
    NotFound,
    PersistenceError,
    ValidationError,
)
from persistence.models import MAX_SHARES
from tests.factories import make_fill, tx_hash
from tests.support import EMPTY_ALL

D = Decimal

# Each query returns the rows that break one invariant; all must return none.
INVARIANTS = {
    "fills = executions + accumulated, per symbol and side": """
        WITH sides AS (
            SELECT symbol, direction FROM onchain_trades
            UNION SELECT symbol, direction FROM schwab_executions
        )
        SELECT s.symbol, s.direction, filled, executed, accumulated FROM sides s
        CROSS JOIN LATERAL (SELECT coalesce(sum(amount), 0) AS filled FROM onchain_trades f
            WHERE f.symbol = s.symbol AND f.direction = s.direction) f
        CROSS JOIN LATERAL (SELECT coalesce(sum(shares), 0) AS executed FROM schwab_executions e
            WHERE e.symbol = s.symbol AND e.direction = s.direction AND e.status <> 'FAILED') e
        CROSS JOIN LATERAL (SELECT coalesce(sum(CASE WHEN s.direction = 'BUY'
            THEN accumulated_long ELSE accumulated_short END), 0) AS accumulated
            FROM trade_accumulators a WHERE a.symbol = s.symbol) a
        WHERE filled <> executed + accumulated""",
    "the links of each execution not failed add up to its shares": """
        SELECT e.id, e.shares, sum(l.contributed_shares) FROM schwab_executions e
        LEFT JOIN trade_execution_links l ON l.execution_id = e.id
        WHERE e.status <> 'FAILED'
        GROUP BY e.id HAVING coalesce(sum(l.contributed_shares), 0) <> e.shares""",
    "no fill is linked beyond its amount, and unlinked_shares says what is left": """
        SELECT f.id, f.amount, f.unlinked_shares, sum(l.contributed_shares) FROM onchain_trades f
        LEFT JOIN trade_execution_links l ON l.trade_id = f.id
            AND l.execution_id IN (SELECT id FROM schwab_executions WHERE status <> 'FAILED')
        GROUP BY f.id
        HAVING coalesce(sum(l.contributed_shares), 0) > f.amount
            OR f.amount - coalesce(sum(l.contributed_shares), 0) <> f.unlinked_shares""",
    "at most one execution pending per symbol, and it is the accumulator's": """
        SELECT a.symbol, a.pending_execution_id, array_agg(e.id) FROM trade_accumulators a
        LEFT JOIN schwab_executions e ON e.symbol = a.symbol AND e.status = 'PENDING'
        GROUP BY a.symbol, a.pending_execution_id
        HAVING count(e.id) > 1 OR a.pending_execution_id IS DISTINCT FROM min(e.id)""",
    "no execution waits while a whole share is accumulated": """
        SELECT symbol FROM trade_accumulators
        WHERE pending_execution_id IS NULL
            AND (accumulated_long >= 1 OR accumulated_short >= 1)""",
}


def violations(url: str) -> dict[str, list[Any]]:
    """The rows breaking each invariant (none, when the store is consistent)."""
    with psycopg.connect(url) as conn:
        found = {name: conn.execute(query).fetchall() for name, query in INVARIANTS.items()}
    return {name: rows for name, rows in found.items() if rows}


def empty(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(EMPTY_ALL)


@pytest.fixture
def url(database_url: str) -> str:
    return database_url


def test_tables_match_the_models(db: Any, url: str) -> None:
    from persistence import tables

    with psycopg.connect(url) as conn:
        for table, columns in (
            ("onchain_trades", tables.FILL_COLUMNS),
            ("schwab_executions", tables.EXECUTION_COLUMNS),
            ("trade_accumulators", tables.ACCUMULATOR_COLUMNS),
            ("trade_execution_links", tables.LINK_COLUMNS),
            ("event_queue", tables.EVENT_COLUMNS),
        ):
            stored = [
                row[0]
                for row in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = %s ORDER BY ordinal_position",
                    [table],
                )
            ]
            assert set(columns) <= set(stored), (table, set(columns) - set(stored))
            if table == "schwab_executions":  # its functions return rows in table order
                assert tuple(stored) == columns


def test_a_fill_below_one_share_accumulates(db: Any, url: str) -> None:
    fill = make_fill("0.4")
    recorded = db.fills.record(fill)
    assert recorded.trade_id is not None and recorded.execution is None
    stored = db.fills.get(fill.tx_hash, fill.log_index)
    assert (stored.amount, stored.direction, stored.id) == (D("0.4"), Instruction.BUY, 1)
    accumulator = db.accumulators.get("AAPL")
    assert (accumulator.accumulated_long, accumulator.accumulated_short) == (D("0.4"), 0)
    assert accumulator.pending_execution_id is None
    assert db.executions.pending() == []
    assert violations(url) == {}


def test_a_repeated_fill_changes_nothing(db: Any, url: str) -> None:
    fill = make_fill("1.5")
    first = db.fills.record(fill)
    assert first.execution is not None and first.execution.shares == 1
    again = db.fills.record(fill)
    # a retry is told what the first call did (tests/test_retries.py has the details)
    assert (again.trade_id, again.execution, again.already_stored) == (
        first.trade_id,
        first.execution,
        True,
    )
    # the same key with other values is not a retry: refused, nothing changes
    with pytest.raises(Conflict, match="amount"):
        db.fills.record(make_fill("7", tx_hash=fill.tx_hash))
    assert db.accumulators.get("AAPL").accumulated_long == D("0.5")
    assert len(db.fills.list()) == 1 and len(db.executions.pending()) == 1
    assert violations(url) == {}


def test_whole_shares_start_an_execution_linked_oldest_first(db: Any, url: str) -> None:
    amounts = ["0.4", "0.35", "0.3", "1.25"]
    results = [db.fills.record(make_fill(amount)) for amount in amounts]
    assert [r.execution for r in results[:2]] == [None, None]
    execution = results[2].execution
    assert execution is not None
    assert (execution.symbol, execution.shares, execution.direction, execution.status) == (
        "AAPL",
        1,
        Instruction.BUY,
        ExecutionStatus.PENDING,
    )
    assert execution.order_id is execution.price_cents is execution.executed_at is None
    # the third fill is split: 0.25 of it goes into this execution, 0.05 stays accumulated
    links = db.executions.links(execution.id)
    assert [(link.trade_id, link.contributed_shares) for link in links] == [
        (1, D("0.4")),
        (2, D("0.35")),
        (3, D("0.25")),
    ]
    # a pending execution blocks the next one: 1.3 shares wait
    assert results[3].execution is None
    accumulator = db.accumulators.get("AAPL")
    assert accumulator.accumulated_long == D("1.3")
    assert accumulator.pending_execution_id == execution.id
    assert db.executions.get(execution.id) == execution
    assert db.executions.pending("AAPL") == [execution]
    assert db.executions.pending("MSFT") == []
    assert violations(url) == {}


def test_completing_frees_the_symbol_and_starts_the_next(db: Any, url: str) -> None:
    first = db.fills.record(make_fill("1.0")).execution
    db.fills.record(make_fill("2.75"))
    completed = db.executions.complete(first.id, order_id="SCH-1", price_cents=15_025)
    assert completed.status is ExecutionStatus.COMPLETED
    assert (completed.order_id, completed.price_cents) == ("SCH-1", D(15_025))
    assert completed.executed_at is not None
    [second] = db.executions.pending()
    assert (second.shares, second.direction) == (2, Instruction.BUY)
    assert [(k.trade_id, k.contributed_shares) for k in db.executions.links(second.id)] == [
        (2, D("2"))
    ]
    assert db.accumulators.get("AAPL").accumulated_long == D("0.75")
    # completing the last one leaves nothing pending: less than a share waits
    db.executions.complete(second.id, order_id="SCH-2", price_cents=D("15030.5"))
    assert db.executions.pending() == []
    assert db.accumulators.get("AAPL").pending_execution_id is None
    assert violations(url) == {}


def test_a_failed_execution_gives_its_shares_back_to_the_same_fills(db: Any, url: str) -> None:
    db.fills.record(make_fill("0.6"))
    first = db.fills.record(make_fill("0.6")).execution
    db.fills.record(make_fill("0.3"))
    failed = db.executions.fail(first.id)
    assert failed.status is ExecutionStatus.FAILED and failed.executed_at is not None
    assert failed.order_id is failed.price_cents is None
    # 1.5 waiting again: the next execution starts at once, from the same fills, oldest first
    [retry] = db.executions.pending()
    assert retry.id != first.id and retry.shares == 1
    assert [(k.trade_id, k.contributed_shares) for k in db.executions.links(retry.id)] == [
        (1, D("0.6")),
        (2, D("0.4")),
    ]
    # the failed execution keeps its links, as history
    assert len(db.executions.links(first.id)) == 2
    assert db.accumulators.get("AAPL").accumulated_long == D("0.5")
    assert violations(url) == {}


def test_both_sides_accumulate_apart(db: Any, url: str) -> None:
    db.fills.record(make_fill("0.7", direction="SELL"))
    db.fills.record(make_fill("0.7", direction="BUY"))
    accumulator = db.accumulators.get("AAPL")
    assert (accumulator.accumulated_long, accumulator.accumulated_short) == (D("0.7"), D("0.7"))
    execution = db.fills.record(make_fill("2.5", direction="SELL")).execution
    assert (execution.direction, execution.shares) == (Instruction.SELL, 3)
    db.fills.record(make_fill("0.3", direction="BUY"))  # a whole BUY share waits behind it
    db.executions.complete(execution.id, order_id="1", price_cents=1)
    [buy] = db.executions.pending()
    assert (buy.direction, buy.shares) == (Instruction.BUY, 1)
    assert [a.symbol for a in db.accumulators.list()] == ["AAPL"]
    assert violations(url) == {}


def test_symbols_are_independent(db: Any, url: str) -> None:
    aapl = db.fills.record(make_fill("1", symbol="AAPL")).execution
    msft = db.fills.record(make_fill("1", symbol="MSFT")).execution
    assert aapl.symbol == "AAPL" and msft.symbol == "MSFT"
    assert [e.symbol for e in db.executions.pending()] == ["AAPL", "MSFT"]
    assert [a.symbol for a in db.accumulators.list()] == ["AAPL", "MSFT"]


def test_execution_transitions(db: Any) -> None:
    execution = db.fills.record(make_fill("1")).execution
    with pytest.raises(NotFound, match="no execution with id 999"):
        db.executions.complete(999, order_id="1", price_cents=1)
    with pytest.raises(NotFound):
        db.executions.fail(999)
    done = db.executions.complete(execution.id, order_id="A", price_cents=D("10.5"))
    # the bot's retry after a crash: the same completion again is a no-op
    assert db.executions.complete(execution.id, order_id="A", price_cents=D("10.50")) == done
    with pytest.raises(InvalidTransition, match="with other values"):
        db.executions.complete(execution.id, order_id="B", price_cents=D("10.5"))
    with pytest.raises(InvalidTransition, match="COMPLETED and cannot become FAILED"):
        db.executions.fail(execution.id)
    other = db.fills.record(make_fill("1", symbol="MSFT")).execution
    failed = db.executions.fail(other.id)
    assert db.executions.fail(other.id) == failed
    with pytest.raises(InvalidTransition, match="FAILED and cannot become COMPLETED"):
        db.executions.complete(other.id, order_id="A", price_cents=1)
    assert db.executions.get(999) is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("amount", 0.5, "a float is refused"),
        ("amount", D("NaN"), "finite"),
        ("amount", D("0"), "greater than zero"),
        ("amount", D("-1"), "greater than zero"),
        ("amount", D("0.0000000000000000001"), "19 decimal places"),
        ("amount", D("1e20"), "digits before the point"),
        ("price_usdc", 150.25, "a float is refused"),
        ("direction", "HOLD", "not a valid Instruction"),
        ("symbol", "", "non-empty"),
        ("symbol", "A" * 17, "longer than 16"),
        ("tx_hash", "0x12", "64 hexadecimal digits"),
        ("log_index", -1, "between 0"),
    ],
)
def test_invalid_fills_are_refused(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make_fill(**{field: value})


def test_invalid_calls_write_nothing(db: Any, url: str) -> None:
    with pytest.raises(ValidationError, match="record takes a Fill"):
        db.fills.record("not a fill")
    with pytest.raises(ValidationError, match="database assigns"):
        db.fills.record(make_fill(id=5))
    execution = db.fills.record(make_fill("1")).execution
    with pytest.raises(ValidationError, match="a float is refused"):
        db.executions.complete(execution.id, order_id="1", price_cents=10.5)
    with pytest.raises(ValidationError, match="19 decimal places"):
        db.executions.complete(execution.id, order_id="1", price_cents=D("1e-19"))
    with pytest.raises(ValidationError, match="greater than zero"):
        db.executions.complete(execution.id, order_id="1", price_cents=0)
    with pytest.raises(ValidationError, match="order_id"):
        db.executions.complete(execution.id, order_id="", price_cents=1)
    with pytest.raises(ValidationError, match="payload must be a dict"):
        db.events.enqueue(tx_hash(), 0, 1, ["a"])
    with pytest.raises(ValidationError, match="cannot be stored as JSON"):
        db.events.enqueue(tx_hash(), 0, 1, {"price": D("1.5")})
    with pytest.raises(ValidationError, match="cannot be stored as JSON"):
        db.events.enqueue(tx_hash(), 0, 1, {"price": float("nan")})
    with pytest.raises(ValidationError, match="block_number"):
        db.events.enqueue(tx_hash(), 0, -1, {})
    assert db.executions.get(execution.id).status is ExecutionStatus.PENDING
    assert db.events.count_unprocessed() == 0 and len(db.fills.list()) == 1


def test_an_execution_holds_at_most_max_shares(db: Any, url: str) -> None:
    first = db.fills.record(make_fill(str(MAX_SHARES + 2))).execution
    assert first.shares == MAX_SHARES
    db.executions.complete(first.id, order_id="1", price_cents=1)
    [rest] = db.executions.pending()
    assert rest.shares == 2
    assert violations(url) == {}


def test_fills_are_immutable_facts(db: Any, url: str) -> None:
    db.fills.record(make_fill("0.5"))
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE onchain_trades SET amount = 2")


def test_fills_list_pages_and_filters(db: Any) -> None:
    for index in range(5):
        db.fills.record(make_fill("0.1", symbol="AAPL" if index % 2 else "MSFT", direction="SELL"))
    first = db.fills.list(limit=2)
    assert [fill.id for fill in first] == [1, 2]
    assert [fill.id for fill in db.fills.list(after_id=first[-1].id)] == [3, 4, 5]
    assert [fill.id for fill in db.fills.list(symbol="AAPL")] == [2, 4]
    assert db.fills.list(direction="BUY") == []
    with pytest.raises(ValidationError, match="limit"):
        db.fills.list(limit=0)


# --- the event queue ------------------------------------------------------------------------


def test_enqueue_is_idempotent_and_claims_go_oldest_first(db: Any) -> None:
    hashes = [tx_hash() for _ in range(3)]
    assert db.events.enqueue(hashes[0], 2, 11, {"n": 0}) == 1
    assert db.events.enqueue(hashes[1], 1, 11, {"n": 1}) == 2
    assert db.events.enqueue(hashes[2], 0, 10, {"n": 2, "nested": {"a": [1, None]}}) == 3
    assert db.events.enqueue(hashes[0], 2, 11, {"n": "again"}) is None
    assert db.events.count_unprocessed() == 3
    order = []
    for _ in range(3):
        with db.transaction() as tx:
            event = tx.events.claim_next()
            order.append(event.payload["n"])
            tx.events.mark_processed(event.id)
            tx.events.mark_processed(event.id)  # again: a no-op
    assert order == [2, 1, 0]
    with db.transaction() as tx:
        assert tx.events.claim_next() is None
        with pytest.raises(NotFound):
            tx.events.mark_processed(99)
    assert db.events.count_unprocessed() == 0


def test_a_worker_records_and_marks_in_one_transaction(db: Any, url: str) -> None:
    """Claim, record, mark, commit; a crash before the commit leaves the event queued and
    nothing recorded."""
    fill = make_fill("1.5")
    payload = {"symbol": fill.symbol, "amount": str(fill.amount), "direction": "BUY"}
    db.events.enqueue(fill.tx_hash, fill.log_index, 100, payload)

    class Crash(Exception):
        pass

    with pytest.raises(Crash), db.transaction() as tx:
        event = tx.events.claim_next()
        assert tx.fills.record(fill).execution is not None
        tx.events.mark_processed(event.id)
        raise Crash
    assert db.events.count_unprocessed() == 1
    assert db.fills.get(fill.tx_hash, 0) is None and db.accumulators.list() == []
    assert db.executions.pending() == []

    with db.transaction() as tx:
        event = tx.events.claim_next()
        recorded = tx.fills.record(
            Fill(
                event.tx_hash,
                event.log_index,
                event.payload["symbol"],
                D(event.payload["amount"]),
                event.payload["direction"],
                D("150"),
            )
        )
        tx.events.mark_processed(event.id)
    assert recorded.execution.shares == 1
    assert db.events.count_unprocessed() == 0
    assert violations(url) == {}


def test_workers_never_get_the_same_event_nor_wait(db: Any, url: str) -> None:
    for index in range(3):
        db.events.enqueue(tx_hash(), 0, index, {"n": index})
    with db.transaction() as first, db.transaction() as second:
        a = first.events.claim_next()
        b = second.events.claim_next()
        assert (a.block_number, b.block_number) == (0, 1)
        first.events.mark_processed(a.id)
    # the second rolled back (no mark): its event is claimable again
    with db.transaction() as tx:
        assert tx.events.claim_next().block_number == 1


# --- invariants: generated sequences, and races ---------------------------------------------

AMOUNTS = st.decimals(min_value=D("1e-18"), max_value=D("3"), places=18)
STEP = st.one_of(
    st.tuples(
        st.just("fill"),
        st.sampled_from(["AAPL", "MSFT"]),
        st.sampled_from(["BUY", "SELL"]),
        AMOUNTS,
    ),
    st.tuples(st.just("complete"), st.integers(0, 3)),
    st.tuples(st.just("fail"), st.integers(0, 3)),
    st.tuples(st.just("replay"), st.integers(0, 20)),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(STEP, min_size=1, max_size=25))
def test_invariants_hold_for_any_sequence(db: Any, url: str, steps: list[tuple[Any, ...]]) -> None:
    empty(url)
    recorded: list[Fill] = []
    firsts: list[Any] = []
    for step in steps:
        if step[0] == "fill":
            fill = make_fill(step[3], symbol=step[1], direction=step[2])
            first = db.fills.record(fill)
            assert not first.already_stored
            recorded.append(fill)
            firsts.append(first)
        elif step[0] == "replay" and recorded:
            index = step[1] % len(recorded)
            again = db.fills.record(recorded[index])
            assert again.already_stored and again.trade_id == firsts[index].trade_id
            if firsts[index].execution is not None:  # a retry names the execution it started
                assert again.execution.id == firsts[index].execution.id
        elif step[0] in ("complete", "fail"):
            pending = db.executions.pending()
            if pending:
                execution = pending[step[1] % len(pending)]
                if step[0] == "complete":
                    db.executions.complete(execution.id, order_id="1", price_cents=1)
                else:
                    db.executions.fail(execution.id)
    assert violations(url) == {}
    assert len(db.fills.list(limit=100)) == len(recorded)


FILLS_PER_WORKER = 25
RACE_AMOUNTS = [D("0.37"), D("0.5"), D("1.13"), D("0.000000000000000001"), D("2.999")]


def _race_fills(worker: int) -> list[Fill]:
    return [
        make_fill(
            RACE_AMOUNTS[(worker + index) % len(RACE_AMOUNTS)],
            tx_hash=f"0x{worker:032x}{index:032x}",
            direction="SELL" if (worker + index) % 3 == 0 else "BUY",
        )
        for index in range(FILLS_PER_WORKER)
    ]


def _check_race(url: str, workers: int) -> None:
    expected = {fill.tx_hash: fill.amount for w in range(workers) for fill in _race_fills(w)}
    with psycopg.connect(url) as conn:
        stored = dict(conn.execute("SELECT tx_hash, amount FROM onchain_trades").fetchall())
    assert stored == expected  # none lost, none twice
    assert violations(url) == {}


def _settle_some(db: Database, worker: int) -> None:
    for execution in db.executions.pending("AAPL"):
        try:
            if worker % 2:
                db.executions.complete(execution.id, order_id=f"W{worker}", price_cents=1)
            else:
                db.executions.fail(execution.id)
        except InvalidTransition:
            pass  # another worker settled it first


def test_eight_threads_on_one_symbol(_session_db: Database, url: str) -> None:
    empty(url)
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        start.wait()
        for fill in _race_fills(worker):
            _session_db.fills.record(fill)
            _session_db.fills.record(fill)  # a replay, racing with the others
            _settle_some(_session_db, worker)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    _check_race(url, 8)


def test_eight_tasks_on_one_symbol(_session_async_db: Any, url: str) -> None:
    empty(url)
    db = _session_async_db._target

    async def work(worker: int) -> None:
        for fill in _race_fills(worker):
            await db.fills.record(fill)
            for execution in await db.executions.pending("AAPL"):
                with contextlib.suppress(InvalidTransition):  # another task settled it
                    await db.executions.complete(execution.id, order_id="T", price_cents=1)

    async def race() -> None:
        await asyncio.gather(*(work(worker) for worker in range(8)))

    _session_async_db._loop.run(race())
    _check_race(url, 8)


def _process_worker(url: str, worker: int, start: Any) -> None:
    with Database.connect(url, min_size=1, max_size=1) as db:
        start.wait()
        for fill in _race_fills(worker):
            db.fills.record(fill)
            _settle_some(db, worker)


@pytest.mark.slow
def test_eight_processes_on_one_symbol(url: str) -> None:
    empty(url)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(8)
    processes = [
        context.Process(target=_process_worker, args=(url, worker, start)) for worker in range(8)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [process.exitcode for process in processes] == [0] * 8
    _check_race(url, 8)


def test_inconsistent_data_fails_loudly_and_writes_nothing(db: Any, url: str) -> None:
    db.fills.record(make_fill("0.5"))
    with psycopg.connect(url) as conn:  # an accumulator that its fills do not back
        conn.execute("UPDATE trade_accumulators SET accumulated_long = 5")
    assert "fills = executions + accumulated, per symbol and side" in violations(url)
    with pytest.raises(PersistenceError, match="its open fills cover 0"):
        db.fills.record(make_fill("0.1"))
    assert len(db.fills.list()) == 1
