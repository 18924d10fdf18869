"""Text PostgreSQL or UTF-8 cannot carry, payloads jsonb cannot hold, datetimes UTC cannot hold,
and symbols that look alike: each is a ValidationError naming the field, never showing a token,
with nothing written (issue #25, items 5 and 6).

Every test that touches the database runs on both APIs (the ``db`` fixture).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence import (
    Accumulator,
    Execution,
    Fill,
    QueuedEvent,
    SchwabAuth,
    Trade,
    TradeStatus,
    ValidationError,
)
from persistence.converter import auth_from_row, fill_from_row
from persistence.models import MAX_JSON_DEPTH, check_json_object, check_symbol
from persistence.operations import NONE, Query
from persistence.tables import FILL_COLUMNS
from persistence.tokens import parse_keyring
from tests.factories import make_auth, make_fill, make_trade, tx_hash
from tests.support import TEST_TOKEN_KEYS

SURROGATE = "\ud800"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
# datetime.max one hour west of UTC is in year 10000 in UTC; datetime.min one hour east, year 0
OVERFLOWS = [
    datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))),
    datetime.min.replace(tzinfo=timezone(timedelta(hours=1))),
]
TABLES = (
    "trades",
    "schwab_auth",
    "onchain_trades",
    "schwab_executions",
    "trade_accumulators",
    "trade_execution_links",
    "event_queue",
)


def row_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in TABLES
        }


def refused(action: Callable[[], Any], *names: str) -> ValidationError:
    """The ValidationError ``action`` raises; its message names each of ``names``."""
    with pytest.raises(ValidationError) as caught:
        action()
    for name in names:
        assert name in str(caught.value), (name, str(caught.value))
    return caught.value


def shown_anywhere(exc: BaseException) -> str:
    """All an exception can show: its text, repr, traceback and every exception chained to it."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    seen = exc.__context__ or exc.__cause__
    while seen is not None:
        parts += [str(seen), repr(seen), repr(getattr(seen, "object", ""))]
        seen = seen.__context__ or seen.__cause__
    return "\n".join(parts)


# --- lone surrogates: every str field of every model -----------------------------------------

EXECUTION = {
    "id": 1,
    "symbol": "AAPL",
    "shares": 1,
    "direction": "BUY",
    "status": "COMPLETED",
    "order_id": "1",
    "price_cents": Decimal(1),
    "executed_at": NOW,
    "created_at": NOW,
}
ACCUMULATOR = {
    "symbol": "AAPL",
    "accumulated_long": Decimal(0),
    "accumulated_short": Decimal(0),
    "pending_execution_id": None,
    "last_updated": NOW,
}
EVENT = {
    "id": 1,
    "tx_hash": "0x" + "a" * 64,
    "log_index": 0,
    "block_number": 1,
    "payload": {},
    "created_at": NOW,
    "processed_at": None,
}
BUILDERS: dict[str, Callable[..., Any]] = {
    "Trade": make_trade,
    "Fill": make_fill,
    "SchwabAuth": make_auth,
    "Execution": lambda **kw: Execution(**{**EXECUTION, **kw}),
    "Accumulator": lambda **kw: Accumulator(**{**ACCUMULATOR, **kw}),
    "QueuedEvent": lambda **kw: QueuedEvent(**{**EVENT, **kw}),
}
STR_FIELDS = [
    ("Trade", "tx_hash"),
    ("Trade", "onchain_input_symbol"),
    ("Trade", "onchain_output_symbol"),
    ("Trade", "schwab_ticker"),
    ("Trade", "schwab_order_id"),
    ("Fill", "tx_hash"),
    ("Fill", "symbol"),
    ("Execution", "symbol"),
    ("Execution", "order_id"),
    ("Accumulator", "symbol"),
    ("QueuedEvent", "tx_hash"),
    ("QueuedEvent", "last_error"),
]


def test_every_str_field_of_every_model_is_listed() -> None:
    models = {"Trade": Trade, "Fill": Fill, "Execution": Execution, "Accumulator": Accumulator}
    models |= {"QueuedEvent": QueuedEvent, "SchwabAuth": SchwabAuth}
    found = {
        (name, field.name)
        for name, model in models.items()
        for field in attrs.fields(model)
        if field.type in (str, str | None, "str", "str | None")
    }
    secrets = {("SchwabAuth", "access_token"), ("SchwabAuth", "refresh_token")}
    assert found == set(STR_FIELDS) | secrets


@pytest.mark.parametrize(("model", "field"), STR_FIELDS)
@pytest.mark.parametrize("where", ["alone", "inside"])
def test_a_lone_surrogate_in_any_str_field_is_refused_naming_it(
    model: str, field: str, where: str
) -> None:
    value = SURROGATE if where == "alone" else f"AB{SURROGATE}C"
    error = refused(lambda: BUILDERS[model](**{field: value}), field)
    assert error.__context__ is None or not isinstance(error.__context__, UnicodeError)


@pytest.mark.parametrize("field", ["access_token", "refresh_token"])
def test_a_token_with_a_lone_surrogate_is_refused_without_showing_any_of_it(field: str) -> None:
    token = "Schwab-token-" + "x7Qz" * 20 + SURROGATE + "tail-of-the-token"
    error = refused(lambda: make_auth(**{field: token}), field, "value not shown")
    shown = shown_anywhere(error)
    for part in ("Schwab-token", "x7Qz", "tail-of-the-token", SURROGATE, "\\ud800"):
        assert part not in shown


def test_sealing_a_token_that_utf8_cannot_encode_shows_none_of_it() -> None:
    keyring = parse_keyring(TEST_TOKEN_KEYS)
    token = "sealed-secret-" + SURROGATE + "-rest"
    with pytest.raises(ValidationError, match="value not shown") as caught:
        keyring.seal(token, b"context")
    shown = shown_anywhere(caught.value)
    assert "sealed-secret" not in shown and "-rest" not in shown
    assert caught.value.__context__ is None  # no UnicodeEncodeError (whose repr holds it) kept


def test_saving_a_row_built_token_with_a_surrogate_writes_nothing_and_shows_nothing(
    db: Any, emptied_url: str
) -> None:
    # rows become models without validation: the sealing is the last check before the server
    token = "row-built-secret-" + SURROGATE
    auth = auth_from_row((token, NOW, "refresh", NOW), SchwabAuth)
    with pytest.raises(ValidationError) as caught:
        db.schwab_auth.save(auth)
    assert "row-built-secret" not in shown_anywhere(caught.value)
    assert row_counts(emptied_url)["schwab_auth"] == 0
    assert db.schwab_auth.load() is None


# --- lone surrogates in the str arguments of operations --------------------------------------


def _stored(db: Any) -> dict[str, Any]:
    """A trade and a pending execution to aim the operations at."""
    trade = make_trade()
    db.trades.insert(trade)
    execution = db.fills.record(make_fill("1")).execution
    return {"trade": trade, "execution": execution}


BAD = f"A{SURROGATE}"
OPERATIONS: dict[str, tuple[str, Callable[[Any, dict[str, Any]], Any]]] = {
    "trades.get": ("tx_hash", lambda db, s: db.trades.get(BAD, 0)),
    "trades.update_status order id": (
        "schwab_order_id",
        lambda db, s: db.trades.update_status(
            s["trade"].tx_hash, 0, TradeStatus.COMPLETED, schwab_order_id=BAD
        ),
    ),
    "trades.update_status status": (
        "status",
        lambda db, s: db.trades.update_status(s["trade"].tx_hash, 0, BAD),
    ),
    "trades.list": ("ticker", lambda db, s: db.trades.list(ticker=BAD)),
    "trades.count": ("status", lambda db, s: db.trades.count(BAD)),
    "fills.get": ("tx_hash", lambda db, s: db.fills.get(BAD, 0)),
    "fills.list symbol": ("symbol", lambda db, s: db.fills.list(symbol=BAD)),
    "fills.list direction": ("direction", lambda db, s: db.fills.list(direction=BAD)),
    "executions.complete": (
        "order_id",
        lambda db, s: db.executions.complete(s["execution"].id, order_id=BAD, price_cents=1),
    ),
    "executions.pending": ("symbol", lambda db, s: db.executions.pending(BAD)),
    "accumulators.get": ("symbol", lambda db, s: db.accumulators.get(BAD)),
    "events.enqueue": ("tx_hash", lambda db, s: db.events.enqueue(BAD, 0, 1, {})),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_a_lone_surrogate_in_an_operation_argument_is_refused_naming_it(
    db: Any, emptied_url: str, operation: str
) -> None:
    stored = _stored(db)
    before = row_counts(emptied_url)
    name, call = OPERATIONS[operation]
    refused(lambda: call(db, stored), name)
    assert row_counts(emptied_url) == before
    assert db.trades.get(stored["trade"].tx_hash, 0).status is TradeStatus.PENDING
    assert db.executions.get(stored["execution"].id).status.value == "PENDING"


def test_a_surrogate_no_check_caught_is_refused_naming_the_parameter_not_its_value(
    db: Any,
) -> None:
    # the runners' last line: psycopg's UnicodeEncodeError would carry the whole text
    query = Query(
        "SELECT %(token)s::text, %(other)s::text", {"token": "hidden-" + BAD, "other": "x"}
    )
    with pytest.raises(ValidationError, match=r"^token holds a lone surrogate") as caught:
        db._run(query)
    assert "hidden-" not in shown_anywhere(caught.value)
    assert caught.value.__context__ is None
    assert db.trades.count() == 0  # nothing reached the server; the connection goes on


# --- payloads --------------------------------------------------------------------------------


def nested(depth: int, leaf: Any = 1, *, kind: str = "dict") -> dict[str, Any]:
    """A payload ``depth`` levels deep, the outer object being level 1."""
    value: Any = leaf
    for _ in range(depth - 1):
        value = {"a": value} if kind == "dict" else [value]
    return {"a": value}


BAD_PAYLOADS = [
    ({1: "a", "1": "b"}, "the key 1 is of type int"),
    ({"a": {2.5: "x"}}, "payload['a']: the key 2.5 is of type float"),
    ({"a": [{None: 1}]}, "payload['a'][0]: the key None"),
    ({("a",): 1}, "the key ('a',) is of type tuple"),
    (nested(5_000), f"nested more than {MAX_JSON_DEPTH} levels"),
    (nested(5_000, kind="list"), f"nested more than {MAX_JSON_DEPTH} levels"),
    (nested(MAX_JSON_DEPTH + 1), f"nested more than {MAX_JSON_DEPTH} levels"),
    ({"a": float("nan")}, "payload['a']=nan cannot be stored as JSON"),
    ({"a": [float("inf")]}, "payload['a'][0]=inf cannot be stored as JSON"),
    ({"a": Decimal("1.5")}, "payload['a']: a Decimal cannot be stored as JSON exactly"),
    ({"a": "x\x00y"}, "payload['a']: the string holds a NUL character"),
    ({"a\x00": "x"}, "payload['a\\x00']: the key holds a NUL character"),
    ({"a": ["ok", "x" + SURROGATE]}, "payload['a'][1]: the string holds a lone surrogate"),
    ({SURROGATE: 1}, "payload['\\ud800']: the key holds a lone surrogate"),
    ({"a": b"bytes"}, "payload['a']: a bytes cannot be stored as JSON"),
    ({"a": NOW}, "payload['a']: a datetime cannot be stored as JSON"),
    (["a"], "payload must be a dict"),
]


@pytest.mark.parametrize(("payload", "message"), BAD_PAYLOADS, ids=range(len(BAD_PAYLOADS)))
def test_a_payload_jsonb_cannot_hold_as_given_is_refused_naming_the_path(
    db: Any, emptied_url: str, payload: Any, message: str
) -> None:
    error = refused(lambda: db.events.enqueue(tx_hash(), 0, 1, payload), message)
    assert not isinstance(error.__context__, RecursionError)
    assert db.events.count_unprocessed() == 0
    assert row_counts(emptied_url)["event_queue"] == 0


def test_the_payload_rules_are_the_queued_events_rules() -> None:
    for payload, message in BAD_PAYLOADS:
        with pytest.raises(ValidationError, match="payload") as caught:
            QueuedEvent(**{**EVENT, "payload": payload})
        assert message.replace("payload", "", 1) in str(caught.value)


def test_a_self_referencing_payload_is_refused_by_depth() -> None:
    payload: dict[str, Any] = {}
    payload["me"] = payload
    with pytest.raises(ValidationError, match="nested more than"):
        check_json_object("metadata", payload)


def test_a_payload_at_the_depth_limit_and_of_every_allowed_type_round_trips(db: Any) -> None:
    payload = {
        "deep": nested(MAX_JSON_DEPTH - 1, "leaf"),
        "deep list": nested(MAX_JSON_DEPTH - 1, "leaf", kind="list")["a"],
        "types": [None, True, False, 0, -(2**70), 1.5, -0.0, "text", "é ü 💡", {"": ""}],
        "price": "150.250000000000000001",  # a Decimal goes as str, exact
    }
    check_json_object("payload", payload)
    assert db.events.enqueue(tx_hash(), 0, 1, payload) is not None
    with db.transaction() as tx:
        event = tx.events.claim_next()
        assert event is not None and event.payload == payload
        assert Decimal(event.payload["price"]) == Decimal("150.250000000000000001")
        tx.events.mark_processed(event.id)


# --- datetimes that overflow in UTC ----------------------------------------------------------

DATETIME_FIELDS = [
    ("Trade", "created_at"),
    ("Fill", "created_at"),
    ("SchwabAuth", "access_token_fetched_at"),
    ("SchwabAuth", "refresh_token_fetched_at"),
    ("Execution", "executed_at"),
    ("Execution", "created_at"),
    ("Accumulator", "last_updated"),
    ("QueuedEvent", "created_at"),
    ("QueuedEvent", "processed_at"),
]


@pytest.mark.parametrize(("model", "field"), DATETIME_FIELDS)
@pytest.mark.parametrize("moment", OVERFLOWS, ids=["max-1h", "min+1h"])
def test_a_datetime_utc_cannot_hold_is_refused_naming_the_field(
    model: str, field: str, moment: datetime
) -> None:
    error = refused(lambda: BUILDERS[model](**{field: moment}), field, "converted to UTC")
    assert not isinstance(error.__context__, OverflowError)


def test_completed_at_that_overflows_is_refused_naming_it() -> None:
    for moment in OVERFLOWS:
        refused(
            lambda moment=moment: make_trade(
                status="COMPLETED", schwab_order_id="1", completed_at=moment
            ),
            "completed_at",
            "converted to UTC",
        )


LISTS = {
    "trades.list": lambda db, **kw: db.trades.list(**kw),
    "fills.list": lambda db, **kw: db.fills.list(**kw),
}


@pytest.mark.parametrize("listing", list(LISTS))
@pytest.mark.parametrize("argument", ["since", "until"])
@pytest.mark.parametrize("moment", OVERFLOWS, ids=["max-1h", "min+1h"])
def test_a_since_or_until_utc_cannot_hold_is_refused_naming_it(
    db: Any, listing: str, argument: str, moment: datetime
) -> None:
    error = refused(lambda: LISTS[listing](db, **{argument: moment}), argument, "UTC")
    assert not isinstance(error.__context__, OverflowError)


def test_the_ends_of_pythons_datetime_range_round_trip_through_timestamptz(db: Any) -> None:
    # PostgreSQL's timestamptz reaches from 4713 BC to 294276 AD: Python's whole range fits
    first = datetime.min.replace(tzinfo=UTC)
    last = datetime.max.replace(tzinfo=UTC)
    for index, moment in enumerate((first, last)):
        trade = make_trade(log_index=index, created_at=moment)
        db.trades.insert(trade)
        assert db.trades.get(trade.tx_hash, index).created_at == moment
        fill = make_fill(log_index=index, created_at=moment)
        db.fills.record(fill)
        assert db.fills.get(fill.tx_hash, index).created_at == moment
    assert [t.created_at for t in db.trades.list(since=first, until=last)] == [first]


# --- arbitrary text --------------------------------------------------------------------------

TEXT_EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@TEXT_EXAMPLES
@given(
    field=st.sampled_from(["onchain_input_symbol", "schwab_ticker", "schwab_order_id"]),
    text=st.text(max_size=20),
)
def test_any_text_in_a_str_field_round_trips_or_is_a_validation_error(
    db: Any, field: str, text: str
) -> None:
    try:
        trade = make_trade(**{field: text})
    except ValidationError:
        return  # refused before the database: nothing else may be raised
    db.trades.insert(trade)
    saved = db.trades.get(trade.tx_hash, 0)
    assert getattr(saved, field) == text


@TEXT_EXAMPLES
@given(key=st.text(max_size=8), value=st.text(max_size=20))
def test_any_text_in_a_payload_round_trips_or_is_a_validation_error(
    db: Any, key: str, value: str
) -> None:
    payload = {key: value, "list": [value]}
    try:
        event_id = db.events.enqueue(tx_hash(), 0, 1, payload)
    except ValidationError:
        return
    with db.transaction() as tx:
        event = tx.events.claim_next()
        assert event is not None and event.id == event_id and event.payload == payload
        tx.events.mark_processed(event.id)


# --- symbols ---------------------------------------------------------------------------------

LOOKALIKES = [
    "AAPL\u200b",  # zero-width space
    "\ufeffAAPL",  # zero-width no-break space (BOM)
    "ＡＡＰＬ",  # noqa: RUF001  full-width
    "\u0410APL",  # Cyrillic A
    "ÄAPL",
    "AAPL ",
    " AAPL",
    "AA PL",
    "AAPL\n",
    "AAPL\t",
    "AAPL_B",
    "AAPL" + SURROGATE,
    "A" * 17,
    "",
]
ACCEPTED = ["AAPL", "aapl", "tAAPL", "TAAPL", "BRK.B", "BRK/B", "A-B", "A", "A" * 16, "0"]


@pytest.mark.parametrize("symbol", LOOKALIKES)
def test_a_symbol_not_plain_ascii_is_refused_for_every_model_saying_what_is_allowed(
    symbol: str,
) -> None:
    for build in (make_fill, BUILDERS["Execution"], BUILDERS["Accumulator"]):
        refused(lambda build=build: build(symbol=symbol), "symbol", "ASCII letters, digits")
    refused(lambda: make_trade(schwab_ticker=symbol), "schwab_ticker", "ASCII letters")


@pytest.mark.parametrize("symbol", LOOKALIKES)
def test_a_lookalike_symbol_argument_is_refused_and_nothing_is_written(
    db: Any, emptied_url: str, symbol: str
) -> None:
    db.fills.record(make_fill("0.5", symbol="AAPL"))
    before = row_counts(emptied_url)
    for call in (
        lambda: db.accumulators.get(symbol),
        lambda: db.executions.pending(symbol),
        lambda: db.fills.list(symbol=symbol),
        lambda: db.trades.list(ticker=symbol),
    ):
        refused(call, "ASCII letters, digits, '.', '-' or '/'")
    # a Fill built from a row skips the validators: the database's CHECK (0006) refuses it
    with pytest.raises(ValidationError, match="symbol"):
        db.fills.record(row_built_fill(symbol))
    assert row_counts(emptied_url) == before
    assert [a.symbol for a in db.accumulators.list()] == ["AAPL"]


def row_built_fill(symbol: str) -> Fill:
    fields = attrs.asdict(make_fill("0.5"), recurse=False) | {"symbol": symbol}
    return fill_from_row(tuple(fields[name] for name in FILL_COLUMNS), Fill)


def test_accepted_symbols_keep_their_case_and_books_of_their_own(db: Any) -> None:
    for symbol in ACCEPTED:
        assert check_symbol("symbol", symbol) == symbol
        db.fills.record(make_fill("0.5", symbol=symbol))
    for symbol in ACCEPTED:
        accumulator = db.accumulators.get(symbol)
        assert accumulator is not None and accumulator.accumulated_long == Decimal("0.5")
        assert db.executions.pending(symbol) == []
        assert [f.symbol for f in db.fills.list(symbol=symbol)] == [symbol]
    assert sorted(a.symbol for a in db.accumulators.list()) == sorted(ACCEPTED)
    db.trades.insert(make_trade(schwab_ticker="BRK/B"))
    assert [t.schwab_ticker for t in db.trades.list(ticker="BRK/B")] == ["BRK/B"]
    assert db.trades.list(ticker="brk/b") == []


@pytest.mark.parametrize(
    "table", ["onchain_trades", "schwab_executions", "trade_accumulators"], ids=str
)
def test_the_database_itself_refuses_a_lookalike_symbol(db: Any, table: str) -> None:
    # defence in depth (migration 0006): a writer that skips the models is refused too
    statements = {
        "onchain_trades": "INSERT INTO onchain_trades (tx_hash, log_index, symbol, amount, "
        "direction, price_usdc, unlinked_shares) VALUES (%(h)s, 0, %(s)s, 1, 'BUY', 1, 1)",
        "schwab_executions": "INSERT INTO schwab_executions (symbol, shares, direction, status, "
        "executed_at) VALUES (%(s)s, 1, 'BUY', 'FAILED', now())",
        "trade_accumulators": "INSERT INTO trade_accumulators (symbol) VALUES (%(s)s)",
    }
    for symbol in ("AAPL\u200b", "ＡＡＰＬ", "AAPL "):  # noqa: RUF001
        query = Query(statements[table], {"h": tx_hash(), "s": symbol})
        with pytest.raises(ValidationError, match=f"{table}_symbol_charset_check"):
            db._run(query)
    db._run(Query(statements[table], {"h": tx_hash(), "s": "BRK/B"}, fetch=NONE))
