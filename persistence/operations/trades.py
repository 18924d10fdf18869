"""Trades: insert (idempotent on tx_hash and log_index), read, complete, list, count."""

from __future__ import annotations

import builtins
from collections.abc import Generator, Iterable
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

from persistence.converter import trade_copy_row, trade_from_row, trade_or_none, trade_params
from persistence.errors import Conflict, InvalidTransition, NotFound, ValidationError
from persistence.models import Trade, TradeStatus
from persistence.operations import (
    ALL,
    COUNT,
    NONE,
    Batch,
    Copy,
    Query,
    Repeat,
    Step,
    Steps,
    integer,
    new_id,
    nothing_new,
    point,
)
from persistence.operations.checks import aware, key, page
from persistence.queries import trades as sql
from persistence.validation import PRICE_CENTS, check_decimal, check_symbol, check_text

_STATUSES = {member.value: member for member in TradeStatus}


def status_of(value: Any) -> TradeStatus:
    member = _STATUSES.get(value.value if isinstance(value, TradeStatus) else value)
    if member is None:
        raise ValidationError(f"status={value!r}: use one of {', '.join(_STATUSES)}")
    return member


def _trades(rows: Any) -> builtins.list[Trade]:
    return [trade_from_row(row) for row in rows]


def insert(trade: Trade) -> Query[int | None]:
    """Insert ``trade``; its new id, or None when (tx_hash, log_index) is already stored."""
    if not isinstance(trade, Trade):
        raise ValidationError(f"insert takes a Trade, not {type(trade).__name__}")
    statement = sql.INSERT_TRADE if trade.id is None else sql.INSERT_TRADE_WITH_ID
    return point(statement, trade_params(trade), new_id, nothing_new)


def insert_many(trades: Iterable[Trade], *, batch_size: int = 50_000) -> Steps[int]:
    """Insert any number of trades in one transaction, skipping stored (tx_hash, log_index).

    Trades are taken ``batch_size`` at a time, so memory stays bounded whatever the input (an
    async iterable too, on the async API). Returns how many rows were new.
    """
    if type(batch_size) is not int or batch_size < 1:
        raise ValidationError(f"batch_size={batch_size!r}: must be an int of at least 1")
    given = [0]  # trades read so far: fewer new than read, some were stored already
    return Steps(
        _insert_many(batch_size, given),
        source=trades,
        stored=lambda inserted: inserted < given[0],
    )


def _insert_many(batch_size: int, given: builtins.list[int]) -> Generator[Step, Any, int]:
    inserted = 0
    explicit_ids = False
    while batch := (yield Batch(batch_size)):
        given[0] += len(batch)
        for position, trade in enumerate(batch):
            if not isinstance(trade, Trade):
                raise ValidationError(
                    f"insert_many takes Trades, got {type(trade).__name__} "
                    f"at row {inserted + position}"
                )
        explicit_ids = explicit_ids or any(trade.id is not None for trade in batch)
        inserted += yield from _copy_new(batch)
    if explicit_ids:
        yield Query(sql.ADVANCE_TRADE_ID, fetch=NONE)
    return inserted


def _copy_new(batch: builtins.list[Trade]) -> Generator[Step, Any, int]:
    """Insert the new trades of ``batch``; returns how many there were.

    Fast path: COPY straight into trades under a savepoint, as fast as a plain COPY. If a row is
    already stored, that raises a unique violation; the savepoint is rolled back and the batch
    goes through a staging table and INSERT ... ON CONFLICT DO NOTHING instead (measured: the
    conflict check makes that path about 1.5 times slower, so it is kept for when it is needed).
    """
    with_id = batch[0].id is not None
    with_created_at = batch[0].created_at is not None
    if all(
        (t.id is not None) is with_id and (t.created_at is not None) is with_created_at
        for t in batch
    ):
        statement, columns = sql.copy_trades(with_id=with_id, with_created_at=with_created_at)
        row = attrgetter(*columns)
        try:
            copied: int = yield Copy(statement, map(row, batch), savepoint=True)
            return copied
        except Conflict:
            pass  # some are stored already
    yield Query(sql.CREATE_TRADES_STAGE, fetch=NONE)
    yield Copy(sql.COPY_TRADES_STAGE, map(trade_copy_row, batch))
    inserted: int = yield Query(sql.INSERT_TRADES_FROM_STAGE, fetch=COUNT)
    yield Query(sql.TRUNCATE_TRADES_STAGE, fetch=NONE)
    return inserted


def get(tx_hash: str, log_index: int) -> Query[Trade | None]:
    """The trade of that on-chain event, or None."""
    return point(sql.SELECT_TRADE_BY_KEY, key(tx_hash, log_index), trade_or_none)


def get_by_id(trade_id: int) -> Query[Trade | None]:
    """The trade with that id, or None."""
    if type(trade_id) is not int:
        raise ValidationError(f"id={trade_id!r}: must be an int")
    return Query(sql.SELECT_TRADE_BY_ID, {"id": trade_id}, decode=trade_or_none)


def update_status(
    tx_hash: str,
    log_index: int,
    status: TradeStatus | str,
    *,
    schwab_order_id: str | None = None,
    schwab_price_per_share_cents: Decimal | None = None,
) -> Steps[Trade]:
    """Move a PENDING trade to COMPLETED or FAILED and set completed_at; returns the trade.

    Raises NotFound for an unknown trade and InvalidTransition for any other move; of two
    workers completing the same trade with different values, exactly one succeeds. Repeating a
    move that already landed, with the same values (or none), returns the stored trade: safe
    for a bot that crashed before it knew whether its write landed.
    """
    params = key(tx_hash, log_index)
    target = status_of(status)
    # the Trade model's own rule: an id it would refuse must not get in this way either
    check_text("schwab_order_id", schwab_order_id, optional=True)
    if schwab_price_per_share_cents is not None:
        check_decimal("schwab_price_per_share_cents", schwab_price_per_share_cents, PRICE_CENTS)
    params.update(
        status=target.value,
        schwab_order_id=schwab_order_id,
        schwab_price_per_share_cents=schwab_price_per_share_cents,
    )
    repeat = Repeat()
    return Steps(_update_status(params, target, repeat), atomic=False, stored=repeat)


def _update_status(
    params: dict[str, Any], target: TradeStatus, repeat: Repeat
) -> Generator[Step, Any, Trade]:
    if target is not TradeStatus.PENDING:
        row = yield Query(sql.UPDATE_TRADE_STATUS, params)
        if row is not None:
            return trade_from_row(row)
    row = yield Query(sql.SELECT_TRADE_BY_KEY, params)
    if row is None:
        raise NotFound(
            f"no trade with tx_hash {params['tx_hash']} and log_index {params['log_index']}"
        )
    current = trade_from_row(row)
    if _repeats(current, target, params):
        repeat.found()
        return current  # a retry of a move that already landed, e.g. after a crash
    raise InvalidTransition(
        f"trade {params['tx_hash']}#{params['log_index']} is {current.status.value} and cannot "
        f"become {target.value}: only PENDING -> COMPLETED and PENDING -> FAILED are allowed "
        "(repeating a move with the same values is a no-op)"
    )


def _repeats(current: Trade, target: TradeStatus, params: dict[str, Any]) -> bool:
    """Whether the request is the move that ``current`` already shows, value for value."""
    if target is TradeStatus.PENDING or current.status is not target:
        return False
    return all(
        params[name] is None or params[name] == getattr(current, name)
        for name in ("schwab_order_id", "schwab_price_per_share_cents")
    )


def list(
    *,
    status: TradeStatus | str | None = None,
    ticker: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    after_id: int | None = None,
) -> Query[builtins.list[Trade]]:
    """One page of trades by ascending id; pass the last id as ``after_id`` for the next.

    ``since`` is inclusive and ``until`` exclusive, both on created_at.
    """
    paging = page(limit, after_id)
    statement, params = sql.list_trades(
        status=None if status is None else status_of(status).value,
        ticker=None if ticker is None else check_symbol("ticker", ticker),
        since=aware("since", since),
        until=aware("until", until),
        **paging,
    )
    return Query(statement, params, fetch=ALL, decode=_trades)


def pending() -> Query[builtins.list[Trade]]:
    """Every PENDING trade, oldest id first."""
    return Query(sql.SELECT_PENDING_TRADES, fetch=ALL, decode=_trades)


def count(status: TradeStatus | str | None = None) -> Query[int]:
    """How many trades there are (with that status, when given)."""
    if status is None:
        return Query(sql.COUNT_TRADES, decode=integer)
    return Query(sql.COUNT_TRADES_BY_STATUS, {"status": status_of(status).value}, decode=integer)
