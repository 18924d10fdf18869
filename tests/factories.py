"""Valid domain objects for tests, and Hypothesis strategies for them."""

from __future__ import annotations

import secrets
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any

from hypothesis import strategies as st

from persistence import Fill, Instruction, SchwabAuth, Trade, TradeStatus
from persistence.models import SYMBOL_PATTERN


def tx_hash() -> str:
    return "0x" + secrets.token_hex(32)


def make_trade(**overrides: Any) -> Trade:
    fields: dict[str, Any] = {
        "tx_hash": tx_hash(),
        "log_index": 0,
        "onchain_input_symbol": "USDC",
        "onchain_input_amount": Decimal("150.250000000000000001"),
        "onchain_output_symbol": "tAAPL",
        "onchain_output_amount": Decimal("1.000000000000000001"),
        "onchain_io_ratio": Decimal("150.24999999999999985024999999999"),
        "onchain_price_per_share_cents": Decimal("15025.000000000000085"),
        "schwab_ticker": "AAPL",
        "schwab_instruction": Instruction.BUY,
        "schwab_quantity": 1,
    }
    fields.update(overrides)
    return Trade(**fields)


def make_fill(amount: Any = "0.5", **overrides: Any) -> Fill:
    fields: dict[str, Any] = {
        "tx_hash": tx_hash(),
        "log_index": 0,
        "symbol": "AAPL",
        "amount": Decimal(amount) if isinstance(amount, str) else amount,
        "direction": Instruction.BUY,
        "price_usdc": Decimal("150.25"),
    }
    fields.update(overrides)
    return Fill(**fields)


def make_auth(**overrides: Any) -> SchwabAuth:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "access_token": "access-" + secrets.token_hex(8),
        "access_token_fetched_at": now,
        "refresh_token": "refresh-" + secrets.token_hex(8),
        "refresh_token_fetched_at": now - timedelta(days=1),
    }
    fields.update(overrides)
    return SchwabAuth(**fields)


def _decimals(integer_digits: int, places: int) -> st.SearchStrategy[Decimal]:
    # the largest value that fits, computed exactly (the default context has 28 digits)
    top = Context(prec=100).subtract(Decimal(10) ** integer_digits, Decimal(1).scaleb(-places))
    return st.decimals(
        min_value=Decimal(1).scaleb(-places),
        max_value=top,
        places=places,
        allow_nan=False,
        allow_infinity=False,
    )


amounts = _decimals(20, 18)
ratios = _decimals(30, 30)
prices = _decimals(12, 18)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
)
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=16,
).filter(lambda s: s == s.strip() and s != "")
# on-chain symbols: visible text in NFKC form (persistence.models._visible_text)
_INVISIBLE = ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
visible_texts = (
    st.text(alphabet=st.characters(blacklist_categories=_INVISIBLE), min_size=1, max_size=16)
    .map(lambda s: unicodedata.normalize("NFKC", s))
    .filter(
        lambda s: (
            s == s.strip()
            and 0 < len(s) <= 64
            and not any(unicodedata.category(c) in _INVISIBLE for c in s)
        )
    )
)
# tickers and symbols: persistence.models.SYMBOL_PATTERN
symbols = st.from_regex(SYMBOL_PATTERN, fullmatch=True)
hashes = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()) | st.binary(
    min_size=32, max_size=32
).map(lambda b: "0x" + b.hex().upper())


@st.composite
def trades(draw: st.DrawFn) -> Trade:
    status = draw(st.sampled_from(list(TradeStatus)))
    completed = None if status is TradeStatus.PENDING else draw(moments)
    order_id = draw(texts) if status is TradeStatus.COMPLETED else draw(st.none() | texts)
    return Trade(
        tx_hash=draw(hashes),
        log_index=draw(st.integers(0, 2**31 - 1)),
        onchain_input_symbol=draw(visible_texts),
        onchain_input_amount=draw(amounts),
        onchain_output_symbol=draw(visible_texts),
        onchain_output_amount=draw(amounts),
        onchain_io_ratio=draw(ratios),
        onchain_price_per_share_cents=draw(prices),
        schwab_ticker=draw(symbols),
        schwab_instruction=draw(st.sampled_from(list(Instruction))),
        schwab_quantity=draw(st.integers(1, 2**31 - 1)),
        schwab_price_per_share_cents=draw(st.none() | prices),
        status=status,
        schwab_order_id=order_id,
        created_at=draw(st.none() | moments),
        completed_at=completed,
    )
