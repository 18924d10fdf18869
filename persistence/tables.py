"""Every table and column name, in one place (PyPika ``Table`` objects)."""

from __future__ import annotations

from pypika import Table

__all__ = [
    "ACCUMULATORS",
    "ACCUMULATOR_COLUMNS",
    "EVENTS",
    "EVENT_COLUMNS",
    "EXECUTIONS",
    "EXECUTION_COLUMNS",
    "FILLS",
    "FILL_COLUMNS",
    "LINKS",
    "LINK_COLUMNS",
    "SCHWAB_AUTH",
    "SCHWAB_AUTH_COLUMNS",
    "SCHWAB_AUTH_SEALED",
    "TRADES",
    "TRADE_COLUMNS",
]

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

SCHWAB_AUTH = Table("schwab_auth")
SCHWAB_AUTH_COLUMNS: tuple[str, ...] = (
    "access_token",
    "access_token_fetched_at",
    "refresh_token",
    "refresh_token_fetched_at",
)
# the sealed tokens and their key's id (migration 0003); the plain columns are NULL beside them
SCHWAB_AUTH_SEALED: tuple[str, ...] = (
    "access_token_sealed",
    "refresh_token_sealed",
    "token_key_id",
)

# The trade-batching model (migration 0002). Each tuple is in its model's field order.
FILLS = Table("onchain_trades")
FILL_COLUMNS: tuple[str, ...] = (
    "tx_hash",
    "log_index",
    "symbol",
    "amount",
    "direction",
    "price_usdc",
    "id",
    "created_at",
)
EXECUTIONS = Table("schwab_executions")
EXECUTION_COLUMNS: tuple[str, ...] = (
    "id",
    "symbol",
    "shares",
    "direction",
    "status",
    "order_id",
    "price_cents",
    "executed_at",
    "created_at",
)
ACCUMULATORS = Table("trade_accumulators")
ACCUMULATOR_COLUMNS: tuple[str, ...] = (
    "symbol",
    "accumulated_long",
    "accumulated_short",
    "pending_execution_id",
    "last_updated",
)
LINKS = Table("trade_execution_links")
LINK_COLUMNS: tuple[str, ...] = ("trade_id", "execution_id", "contributed_shares")
EVENTS = Table("event_queue")
EVENT_COLUMNS: tuple[str, ...] = (
    "id",
    "tx_hash",
    "log_index",
    "block_number",
    "payload",
    "created_at",
    "processed_at",
    # migration 0004: failed attempts and dead letters
    "attempts",
    "last_error",
    "last_failed_at",
    "next_attempt_at",
    "dead_at",
)
