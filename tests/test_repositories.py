"""The bot's behaviours against PostgreSQL: trades, tokens, transactions, concurrency."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings

from persistence import (
    Conflict,
    Database,
    InvalidTransition,
    NotFound,
    Trade,
    TradeStatus,
    ValidationError,
)
from persistence.tables import TRADE_COLUMNS
from tests.factories import make_auth, make_trade, trades, tx_hash

DB_EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def stored(trade: Trade, saved: Trade) -> Trade:
    """``trade`` as the database should give it back: with its id and timestamps."""
    return attrs.evolve(trade, id=saved.id, created_at=trade.created_at or saved.created_at)


def test_table_columns_match_the_model(db: Database) -> None:
    with db.pool.connection() as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'trades'"
        ).fetchall()
    assert {row[0] for row in rows} == set(TRADE_COLUMNS)


def test_a_new_trade_is_saved_with_every_field_intact(db: Database) -> None:
    trade = make_trade(
        schwab_price_per_share_cents=Decimal("15025.123456789012345678"), schwab_order_id="ORD-1"
    )
    new_id = db.trades.insert(trade)
    assert isinstance(new_id, int)
    saved = db.trades.get(trade.tx_hash, trade.log_index)
    assert saved is not None
    assert saved == stored(trade, saved)
    assert saved.id == new_id
    assert saved.created_at is not None and abs(saved.created_at - datetime.now(UTC)) < timedelta(
        minutes=1
    )
    assert isinstance(saved.onchain_input_amount, Decimal)
    assert saved.created_at.utcoffset() == timedelta(0)
    assert db.trades.get_by_id(new_id) == saved


def test_lookup_normalises_the_hash_case(db: Database) -> None:
    trade = make_trade()
    db.trades.insert(trade)
    assert db.trades.get(trade.tx_hash.upper().replace("0X", "0x"), trade.log_index) is not None
    assert db.trades.get(trade.tx_hash, trade.log_index + 1) is None
    with pytest.raises(ValidationError, match="64 hexadecimal"):
        db.trades.get("0x12", 0)


def test_saving_the_same_event_twice_keeps_one_row(db: Database) -> None:
    trade = make_trade()
    assert db.trades.insert(trade) is not None
    assert db.trades.insert(attrs.evolve(trade, schwab_quantity=99)) is None
    assert db.trades.count() == 1
    assert db.trades.get(trade.tx_hash, trade.log_index).schwab_quantity == 1  # type: ignore[union-attr]


def test_an_empty_table_counts_zero(db: Database) -> None:
    assert db.trades.count() == 0
    assert db.trades.count(TradeStatus.PENDING) == 0
    assert db.trades.pending() == []
    assert db.schwab_auth.load() is None


@pytest.mark.parametrize("status", [TradeStatus.COMPLETED, TradeStatus.FAILED])
def test_update_status_sets_status_and_completed_at(db: Database, status: TradeStatus) -> None:
    trade = make_trade()
    db.trades.insert(trade)
    updated = db.trades.update_status(
        trade.tx_hash,
        trade.log_index,
        status,
        schwab_order_id="ORD-7",
        schwab_price_per_share_cents=Decimal("15030.5"),
    )
    assert updated.status is status
    assert updated.completed_at is not None and updated.completed_at >= updated.created_at  # type: ignore[operator]
    assert updated.schwab_order_id == "ORD-7"
    assert updated.schwab_price_per_share_cents == Decimal("15030.5")
    assert db.trades.get(trade.tx_hash, trade.log_index) == updated
    assert db.trades.count(status) == 1 and db.trades.count("PENDING") == 0


def test_a_completed_trade_cannot_fail(db: Database) -> None:
    trade = make_trade()
    db.trades.insert(trade)
    db.trades.update_status(trade.tx_hash, trade.log_index, "COMPLETED", schwab_order_id="O-1")
    with pytest.raises(InvalidTransition, match="is COMPLETED and cannot become FAILED"):
        db.trades.update_status(trade.tx_hash, trade.log_index, "FAILED")
    saved = db.trades.get(trade.tx_hash, trade.log_index)
    assert saved is not None and saved.status is TradeStatus.COMPLETED
    assert saved.schwab_order_id == "O-1"


def test_repeating_a_landed_move_with_the_same_values_returns_the_trade(db: Database) -> None:
    """The bot completed the order at Schwab and crashed before it knew the write landed."""
    trade = make_trade()
    db.trades.insert(trade)
    price = Decimal("15030.5")
    first = db.trades.update_status(
        trade.tx_hash, 0, "COMPLETED", schwab_order_id="42", schwab_price_per_share_cents=price
    )
    again = db.trades.update_status(
        trade.tx_hash, 0, "COMPLETED", schwab_order_id="42", schwab_price_per_share_cents=price
    )
    assert again == first
    assert db.trades.update_status(trade.tx_hash, 0, "COMPLETED") == first  # no values: same
    with pytest.raises(InvalidTransition, match="is COMPLETED and cannot become COMPLETED"):
        db.trades.update_status(trade.tx_hash, 0, "COMPLETED", schwab_order_id="43")
    with pytest.raises(InvalidTransition, match="is COMPLETED and cannot become FAILED"):
        db.trades.update_status(trade.tx_hash, 0, "FAILED")
    assert db.trades.get(trade.tx_hash, 0) == first


def test_forbidden_transitions_name_both_states(db: Database) -> None:
    trade = make_trade()
    db.trades.insert(trade)
    db.trades.update_status(trade.tx_hash, trade.log_index, "FAILED")
    with pytest.raises(InvalidTransition, match="is FAILED and cannot become COMPLETED"):
        db.trades.update_status(trade.tx_hash, trade.log_index, "COMPLETED", schwab_order_id="X")
    with pytest.raises(InvalidTransition, match="is FAILED and cannot become PENDING"):
        db.trades.update_status(trade.tx_hash, trade.log_index, TradeStatus.PENDING)
    with pytest.raises(NotFound):
        db.trades.update_status(tx_hash(), 0, "COMPLETED", schwab_order_id="X")
    with pytest.raises(ValidationError, match="status="):
        db.trades.update_status(trade.tx_hash, trade.log_index, "DONE")
    with pytest.raises(ValidationError, match="float"):
        db.trades.update_status(
            trade.tx_hash, trade.log_index, "COMPLETED", schwab_price_per_share_cents=1.5
        )  # type: ignore[arg-type]


def test_completing_without_an_order_id_is_refused_and_nothing_changes(db: Database) -> None:
    trade = make_trade()
    db.trades.insert(trade)
    with pytest.raises(ValidationError, match="trades_completed_order_id_check"):
        db.trades.update_status(trade.tx_hash, trade.log_index, "COMPLETED")
    assert db.trades.get(trade.tx_hash, trade.log_index).status is TradeStatus.PENDING  # type: ignore[union-attr]


def test_tokens_saved_twice_keep_one_row_with_the_latest_values(db: Database) -> None:
    db.schwab_auth.save(make_auth(access_token="first"))
    latest = make_auth(access_token="second", refresh_token="second-refresh")
    db.schwab_auth.save(latest)
    assert db.schwab_auth.load() == latest
    with db.pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM schwab_auth").fetchone() == (1,)


def test_list_filters_and_pages_by_id(db: Database) -> None:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    for index in range(25):
        db.trades.insert(
            make_trade(
                log_index=index,
                schwab_ticker="AAPL" if index % 2 else "MSFT",
                created_at=base + timedelta(hours=index),
            )
        )
    first = db.trades.list(limit=10)
    assert [t.log_index for t in first] == list(range(10))
    second = db.trades.list(limit=10, after_id=first[-1].id)
    assert [t.log_index for t in second] == list(range(10, 20))
    apple = db.trades.list(ticker="AAPL", limit=100)
    assert {t.schwab_ticker for t in apple} == {"AAPL"} and len(apple) == 12
    window = db.trades.list(since=base + timedelta(hours=5), until=base + timedelta(hours=8))
    assert [t.log_index for t in window] == [5, 6, 7]
    db.trades.update_status(first[0].tx_hash, 0, "FAILED")
    assert [t.log_index for t in db.trades.list(status="FAILED")] == [0]
    assert len(db.trades.pending()) == 24
    with pytest.raises(ValidationError, match="limit"):
        db.trades.list(limit=0)
    with pytest.raises(ValidationError, match="timezone-aware"):
        db.trades.list(since=datetime(2026, 1, 1))


def test_insert_many_streams_a_generator_and_skips_existing(db: Database) -> None:
    existing = make_trade(log_index=3)
    db.trades.insert(existing)
    shared_hash = existing.tx_hash

    def generate() -> Iterator[Trade]:
        for index in range(2_500):
            yield make_trade(tx_hash=shared_hash, log_index=index)

    assert db.trades.insert_many(generate(), batch_size=1_000) == 2_499
    assert db.trades.count() == 2_500
    assert db.trades.insert_many(generate(), batch_size=700) == 0
    assert db.trades.insert_many([]) == 0


def test_insert_many_keeps_given_ids_and_moves_the_identity_past_them(db: Database) -> None:
    assert db.trades.insert_many([make_trade(id=1000), make_trade(id=7)]) == 2
    assert db.trades.get_by_id(1000) is not None
    new_id = db.trades.insert(make_trade())
    assert new_id is not None and new_id > 1000


def test_insert_many_handles_batches_mixing_given_and_default_columns(db: Database) -> None:
    stamp = datetime(2026, 5, 1, tzinfo=UTC)
    mixed = [make_trade(), make_trade(id=500), make_trade(created_at=stamp), make_trade()]
    assert db.trades.insert_many(mixed, batch_size=3) == 4
    assert db.trades.get(mixed[2].tx_hash, 0).created_at == stamp  # type: ignore[union-attr]
    assert db.trades.get_by_id(500) is not None
    assert db.trades.insert_many(mixed) == 0


def test_insert_many_writes_nothing_when_one_item_is_bad(db: Database) -> None:
    good = [make_trade(log_index=i) for i in range(10)]
    with pytest.raises(ValidationError, match="takes Trades"):
        db.trades.insert_many([*good, "not a trade"])  # type: ignore[list-item]
    assert db.trades.count() == 0


def test_transaction_commits_rolls_back_and_nests(db: Database) -> None:
    kept, dropped, inner = make_trade(), make_trade(), make_trade()
    with db.transaction() as tx:
        tx.trades.insert(kept)
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.trades.insert(dropped)
        raise RuntimeError("the hedge failed")
    with db.transaction() as tx:
        with pytest.raises(RuntimeError), tx.transaction() as nested:
            nested.trades.insert(inner)
            raise RuntimeError("undo only the savepoint")
        tx.schwab_auth.save(make_auth())
    assert db.trades.get(kept.tx_hash, 0) is not None
    assert db.trades.get(dropped.tx_hash, 0) is None
    assert db.trades.get(inner.tx_hash, 0) is None
    assert db.schwab_auth.load() is not None


def test_database_errors_inside_a_transaction_are_ours(db: Database) -> None:
    trade = make_trade()
    db.trades.insert(trade)
    with pytest.raises(Conflict, match="trades_pkey"), db.transaction() as tx:
        saved = tx.trades.get(trade.tx_hash, 0)
        tx.trades.insert(make_trade(id=saved.id))  # type: ignore[union-attr]


def test_sql_metacharacters_are_stored_verbatim(db: Database) -> None:
    nasty = "'; DROP TABLE trades; --"
    # (a ticker is letters, digits, '.', '-' and '/' only: the free text is in the other fields)
    trade = make_trade(
        onchain_input_symbol=nasty, onchain_output_symbol="%(x)s", schwab_order_id="%s\\'"
    )
    db.trades.insert(trade)
    saved = db.trades.get(trade.tx_hash, 0)
    assert saved is not None
    stored_texts = (saved.onchain_input_symbol, saved.onchain_output_symbol, saved.schwab_order_id)
    assert stored_texts == (nasty, "%(x)s", "%s\\'")
    assert db.trades.list(ticker="AAPL")[0].tx_hash == trade.tx_hash


@DB_EXAMPLES
@given(trade=trades())
def test_any_valid_trade_round_trips_to_the_last_digit(db: Database, trade: Trade) -> None:
    # a fresh key per example: hypothesis repeats keys, and a repeat would check nothing
    trade = attrs.evolve(trade, tx_hash=tx_hash().upper().replace("0X", "0x"))
    new_id = db.trades.insert(trade)
    assert new_id is not None
    saved = db.trades.get(trade.tx_hash, trade.log_index)
    assert saved is not None
    assert saved == stored(trade, saved)
    # Decimal equality is exact; the stored value carries the column's full scale
    for name, scale in (
        ("onchain_input_amount", 18),
        ("onchain_io_ratio", 30),
        ("onchain_price_per_share_cents", 18),
    ):
        assert getattr(saved, name) == getattr(trade, name)
        assert getattr(saved, name).as_tuple().exponent == -scale


INVALID_FIELDS = [
    ("onchain_input_amount", 0.5),
    ("onchain_input_amount", Decimal("NaN")),
    ("onchain_output_amount", Decimal("Infinity")),
    ("onchain_input_amount", Decimal("1e-19")),
    ("onchain_io_ratio", Decimal("1e-31")),
    ("onchain_price_per_share_cents", Decimal("1e40")),
    ("created_at", datetime(2026, 1, 1)),
    ("tx_hash", "0xZZ"),
    ("log_index", -1),
    ("schwab_ticker", "A\x00B"),
]


def sent_messages(db: Database, action: Callable[[], Any], trace: Path) -> list[str]:
    """The protocol messages the client sent while ``action`` ran on ``db``'s only connection."""
    with trace.open("w") as sink:
        with db.pool.connection() as conn:
            conn.pgconn.trace(sink.fileno())
        try:
            action()
        finally:
            with db.pool.connection() as conn:
                conn.pgconn.untrace()
    return [line for line in trace.read_text().splitlines() if "\tF\t" in line]


@pytest.mark.parametrize(("field", "value"), INVALID_FIELDS)
def test_any_invalid_trade_is_refused_before_the_database(
    database_url: str, tmp_path: Path, field: str, value: Any
) -> None:
    """The model refuses the value, and the wire shows that no message reached the server."""

    def insert_invalid() -> None:
        with pytest.raises(ValidationError, match=field):
            small.trades.insert(make_trade(**{field: value}))

    with Database.connect(database_url, min_size=1, max_size=1) as small:
        assert sent_messages(small, insert_invalid, tmp_path / "wire") == []
        # the trace does see what the library sends, so the check above can fail
        assert sent_messages(small, small.trades.count, tmp_path / "wire") != []


def run_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(count)

    def start(index: int) -> Any:
        barrier.wait()
        try:
            return work(index)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(start, range(count)))


@pytest.mark.slow
def test_eight_threads_inserting_the_same_trades_leave_one_row_each(db: Database) -> None:
    batch = [make_trade(log_index=i) for i in range(250)]
    results = run_threads(8, lambda _: sum(db.trades.insert(t) is not None for t in batch))
    assert sum(results) == 250
    assert db.trades.count() == 250


def test_eight_workers_completing_the_same_trade_one_wins(db: Database) -> None:
    trade = make_trade()
    db.trades.insert(trade)
    results = run_threads(
        8,
        lambda i: db.trades.update_status(
            trade.tx_hash, 0, "COMPLETED", schwab_order_id=f"ORD-{i}"
        ),
    )
    winners = [r for r in results if isinstance(r, Trade)]
    losers = [r for r in results if isinstance(r, InvalidTransition)]
    assert (len(winners), len(losers)) == (1, 7)
    assert db.trades.get(trade.tx_hash, 0) == winners[0]
