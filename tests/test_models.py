"""Domain validation, normalisation and derived values: no server needed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from persistence import (
    Instruction,
    TradeStatus,
    ValidationError,
    io_ratio,
    price_per_share_cents,
)
from persistence.converter import trade_from_row, trade_or_none
from persistence.models import Trade
from persistence.tables import TRADE_COLUMNS
from tests.factories import make_auth, make_trade, trades


def test_a_valid_trade_is_normalised() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    trade = make_trade(
        tx_hash="0x" + "AB" * 32,
        created_at=created,
        schwab_instruction="SELL",
        onchain_output_amount=3,
    )
    assert trade.tx_hash == "0x" + "ab" * 32
    assert trade.created_at == created and trade.created_at.tzinfo is UTC
    assert trade.created_at.hour == 1
    assert trade.schwab_instruction is Instruction.SELL
    assert trade.onchain_output_amount == Decimal(3) and isinstance(
        trade.onchain_output_amount, Decimal
    )
    assert trade.status is TradeStatus.PENDING


def test_trade_is_frozen_and_slotted() -> None:
    trade = make_trade()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        trade.log_index = 5  # type: ignore[misc]
    assert not hasattr(trade, "__dict__")


def test_a_decoded_row_is_the_model_itself_and_as_frozen() -> None:
    # the decoders fill a subclass with plain stores, then make it the model (converter._filler)
    trade = make_trade(id=7, created_at=datetime(2026, 1, 2, tzinfo=UTC))
    row = tuple(getattr(trade, name) for name in TRADE_COLUMNS)
    for decode in (trade_from_row, trade_or_none):
        decoded = decode(row)
        assert type(decoded) is Trade and decoded == trade and hash(decoded) == hash(trade)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            decoded.log_index = 5
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            del decoded.log_index
        assert not hasattr(decoded, "__dict__")
    assert trade_or_none(None) is None


def test_a_float_is_refused_with_the_reason() -> None:
    with pytest.raises(
        ValidationError,
        match=r"onchain_input_amount=0\.1: a float is refused: binary floating point",
    ):
        make_trade(onchain_input_amount=0.1)


INVALID: list[tuple[str, Any, str]] = [
    ("onchain_input_amount", Decimal("NaN"), "finite"),
    ("onchain_output_amount", Decimal("Infinity"), "finite"),
    ("onchain_input_amount", Decimal("-1"), "greater than zero"),
    ("onchain_input_amount", Decimal("0"), "greater than zero"),
    (
        "onchain_input_amount",
        Decimal("1.0000000000000000001"),
        "19 decimal places, the column keeps 18",
    ),
    ("onchain_input_amount", Decimal("1e20"), "21 digits before the point"),
    ("onchain_io_ratio", Decimal("1e-31"), "31 decimal places"),
    ("onchain_price_per_share_cents", Decimal("1e12"), "13 digits before the point"),
    ("schwab_price_per_share_cents", 12.5, "a float is refused"),
    ("onchain_input_amount", "1.5", "must be a Decimal, not str"),
    ("tx_hash", "0x1234", "0x followed by 64 hexadecimal digits"),
    ("tx_hash", "ab" * 33, "0x followed by 64"),
    ("tx_hash", "0x" + "g" * 64, "0x followed by 64"),
    ("log_index", -1, "between 0 and"),
    ("log_index", 2**31, "between 0 and"),
    ("log_index", True, "must be an int, not bool"),
    ("schwab_quantity", 0, "between 1 and"),
    ("schwab_quantity", Decimal("1.5"), "must be an int, not Decimal"),
    ("schwab_instruction", "HOLD", "not a valid Instruction"),
    ("status", "DONE", "not a valid TradeStatus"),
    ("created_at", datetime(2026, 1, 1), "timezone-aware"),
    ("schwab_ticker", "", "non-empty"),
    ("schwab_ticker", " AAPL", "a space at index 0"),
    ("onchain_input_symbol", "US\x00DC", "NUL"),
    ("schwab_order_id", "", "non-empty"),
]


@pytest.mark.parametrize(("field", "value", "message"), INVALID)
def test_invalid_values_are_refused_naming_field_and_reason(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        make_trade(**{field: value})
    assert (
        field in str(caught.value)
        or "Instruction" in str(caught.value)
        or "TradeStatus" in str(caught.value)
    )


def test_trailing_zeros_do_not_count_against_the_scale() -> None:
    assert make_trade(
        onchain_input_amount=Decimal("1.500000000000000000000000")
    ).onchain_input_amount == Decimal("1.5")


def test_status_must_agree_with_completed_at_and_order_id() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValidationError, match="PENDING trade has no completed_at"):
        make_trade(completed_at=now)
    with pytest.raises(ValidationError, match="FAILED trade needs completed_at"):
        make_trade(status="FAILED")
    with pytest.raises(ValidationError, match="COMPLETED trade needs its Schwab order id"):
        make_trade(status="COMPLETED", completed_at=now)
    assert make_trade(status="FAILED", completed_at=now).status is TradeStatus.FAILED


def test_schwab_auth_never_shows_a_token() -> None:
    auth = make_auth(access_token="tok-SECRET-1", refresh_token="tok-SECRET-2")
    assert "SECRET" not in repr(auth) and "SECRET" not in str(auth)
    with pytest.raises(ValidationError) as caught:
        make_auth(access_token="", refresh_token="tok-SECRET-3")
    assert "SECRET" not in str(caught.value)
    with pytest.raises(ValidationError, match="timezone-aware"):
        make_auth(access_token_fetched_at=datetime(2026, 1, 1))


def test_derived_values_round_half_even_at_the_column_scale() -> None:
    # $100 for 3 shares: 3333.33... cents, 18 places
    assert price_per_share_cents(Decimal("100"), Decimal("3")) == Decimal("3333.333333333333333333")
    assert price_per_share_cents(Decimal("200"), Decimal("3")) == Decimal("6666.666666666666666667")
    # exactly half at the 31st place rounds to even
    assert io_ratio(Decimal("1"), Decimal("4")) == Decimal("0.25")
    assert io_ratio(Decimal("0.000000000000000001"), Decimal("64")) == Decimal(
        "0.000000000000000000015625"
    )
    assert io_ratio(Decimal("1"), Decimal("3")) == Decimal("0." + "3" * 30)
    # what the helpers compute always fits the model
    make_trade(
        onchain_io_ratio=io_ratio(Decimal("150.25"), Decimal("0.37")),
        onchain_price_per_share_cents=price_per_share_cents(Decimal("150.25"), Decimal("0.37")),
    )
    with pytest.raises(ValidationError, match="float"):
        io_ratio(1.5, Decimal(1))  # type: ignore[arg-type]


@given(trades())
def test_any_generated_trade_is_valid_and_rebuilds_equal(trade: Any) -> None:
    assert attrs.evolve(trade) == trade


@given(
    st.sampled_from(
        [
            "onchain_input_amount",
            "onchain_output_amount",
            "onchain_io_ratio",
            "schwab_price_per_share_cents",
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([Decimal("NaN"), Decimal("-Infinity"), Decimal("sNaN")])
    | st.decimals(allow_nan=False, allow_infinity=False).filter(lambda d: d <= 0)
    | st.integers(min_value=1, max_value=10**6).map(lambda n: Decimal(1).scaleb(-31 - n % 20)),
)
def test_any_non_finite_float_or_too_fine_amount_is_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        make_trade(**{field: value})
