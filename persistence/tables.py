"""Every table and column name, in one place (PyPika ``Table`` objects)."""

from __future__ import annotations

from pypika import Table

__all__ = ["SCHWAB_AUTH", "SCHWAB_AUTH_COLUMNS", "TRADES", "TRADE_COLUMNS", "TRADE_KEY"]

TRADES = Table("trades")
# in the order of the Trade model's fields: rows are built from tuples in this order
TRADE_COLUMNS: tuple[str, ...] = (
    "tx_hash",
    "log_index",
    "onchain_input_symbol",
    "onchain_input_amount",
    "onchain_output_symbol",
    "onchain_output_amount",
    "onchain_io_ratio",
    "onchain_price_per_share_cents",
    "schwab_ticker",
    "schwab_instruction",
    "schwab_quantity",
    "schwab_price_per_share_cents",
    "status",
    "schwab_order_id",
    "id",
    "created_at",
    "completed_at",
)
TRADE_KEY: tuple[str, str] = ("tx_hash", "log_index")

SCHWAB_AUTH = Table("schwab_auth")
SCHWAB_AUTH_COLUMNS: tuple[str, ...] = (
    "access_token",
    "access_token_fetched_at",
    "refresh_token",
    "refresh_token_fetched_at",
)
