"""Repositories: thin methods that run a prebuilt statement on a connection and build models.

A repository gets its connection from a source: the pool (one autocommit statement, one round
trip) or the connection of the enclosing ``Database.transaction()``.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from decimal import Decimal
from itertools import islice
from operator import attrgetter
from typing import Any

import psycopg

from persistence import queries
from persistence.converter import (
    auth_from_row,
    auth_params,
    trade_copy_row,
    trade_from_row,
    trade_params,
)
from persistence.errors import InvalidTransition, NotFound, ValidationError
from persistence.models import (
    _TX_HASH,
    PRICE_CENTS,
    SchwabAuth,
    Trade,
    TradeStatus,
    check_decimal,
)

__all__ = ["SchwabAuthRepository", "TradeRepository"]

ConnectionSource = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]

MAX_PAGE = 10_000
_STATUSES = {member.value: member for member in TradeStatus}


def _key(tx_hash: str, log_index: int) -> dict[str, Any]:
    # the same rules as Trade's, so that a lookup can never miss because of case
    if not isinstance(tx_hash, str) or not _TX_HASH.fullmatch(normalised := tx_hash.lower()):
        raise ValidationError(f"tx_hash={tx_hash!r}: must be 0x followed by 64 hexadecimal digits")
    if type(log_index) is not int or log_index < 0:
        raise ValidationError(f"log_index={log_index!r}: must be an int >= 0")
    return {"tx_hash": normalised, "log_index": log_index}


def _status(value: Any) -> TradeStatus:
    member = _STATUSES.get(value.value if isinstance(value, TradeStatus) else value)
    if member is None:
        raise ValidationError(f"status={value!r}: use one of {', '.join(_STATUSES)}")
    return member


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
        raise ValidationError(f"{name}={value!r}: must be a timezone-aware datetime")


def _copy_new(conn: psycopg.Connection[Any], batch: builtins.list[Trade]) -> int:
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
        sql, columns = queries.copy_trades(with_id=with_id, with_created_at=with_created_at)
        row = attrgetter(*columns)
        try:
            with conn.transaction(), conn.cursor() as cursor, cursor.copy(sql) as copy:
                for trade in batch:
                    copy.write_row(row(trade))
            return len(batch)
        except psycopg.errors.UniqueViolation:
            pass  # some are stored already
    conn.execute(queries.CREATE_TRADES_STAGE)
    with conn.cursor() as cursor, cursor.copy(queries.COPY_TRADES_STAGE) as copy:
        for trade in batch:
            copy.write_row(trade_copy_row(trade))
    inserted = conn.execute(queries.INSERT_TRADES_FROM_STAGE).rowcount
    conn.execute(queries.TRUNCATE_TRADES_STAGE)
    return inserted


class TradeRepository:
    """Trades: insert (idempotent on tx_hash and log_index), read, complete, list, count."""

    __slots__ = ("_connection",)

    def __init__(self, connection: ConnectionSource) -> None:
        self._connection = connection

    def insert(self, trade: Trade) -> int | None:
        """Insert ``trade``; its new id, or None when (tx_hash, log_index) is already stored."""
        if not isinstance(trade, Trade):
            raise ValidationError(f"insert takes a Trade, not {type(trade).__name__}")
        sql = queries.INSERT_TRADE if trade.id is None else queries.INSERT_TRADE_WITH_ID
        with self._connection() as conn:
            row = conn.execute(sql, trade_params(trade)).fetchone()
        return None if row is None else int(row[0])

    def insert_many(self, trades: Iterable[Trade], *, batch_size: int = 50_000) -> int:
        """Insert any number of trades in one transaction, skipping stored (tx_hash, log_index).

        Trades are taken ``batch_size`` at a time, so memory stays bounded whatever the input.
        Returns how many rows were new.
        """
        if batch_size < 1:
            raise ValidationError(f"batch_size={batch_size!r}: must be at least 1")
        source = iter(trades)
        inserted = 0
        explicit_ids = False
        with self._connection() as conn, conn.transaction():
            while batch := list(islice(source, batch_size)):
                for position, trade in enumerate(batch):
                    if not isinstance(trade, Trade):
                        raise ValidationError(
                            f"insert_many takes Trades, got {type(trade).__name__} "
                            f"at row {inserted + position}"
                        )
                explicit_ids = explicit_ids or any(trade.id is not None for trade in batch)
                inserted += _copy_new(conn, batch)
            if explicit_ids:
                conn.execute(queries.ADVANCE_TRADE_ID)
        return inserted

    def get(self, tx_hash: str, log_index: int) -> Trade | None:
        """The trade of that on-chain event, or None."""
        with self._connection() as conn:
            row = conn.execute(queries.SELECT_TRADE_BY_KEY, _key(tx_hash, log_index)).fetchone()
        return None if row is None else trade_from_row(row, Trade)

    def get_by_id(self, trade_id: int) -> Trade | None:
        """The trade with that id, or None."""
        if type(trade_id) is not int:
            raise ValidationError(f"id={trade_id!r}: must be an int")
        with self._connection() as conn:
            row = conn.execute(queries.SELECT_TRADE_BY_ID, {"id": trade_id}).fetchone()
        return None if row is None else trade_from_row(row, Trade)

    def update_status(
        self,
        tx_hash: str,
        log_index: int,
        status: TradeStatus | str,
        *,
        schwab_order_id: str | None = None,
        schwab_price_per_share_cents: Decimal | None = None,
    ) -> Trade:
        """Move a PENDING trade to COMPLETED or FAILED and set completed_at; returns the trade.

        Raises NotFound for an unknown trade and InvalidTransition for any other move; of two
        workers completing the same trade, exactly one succeeds.
        """
        params = _key(tx_hash, log_index)
        target = _status(status)
        if schwab_order_id is not None and (
            not isinstance(schwab_order_id, str) or not schwab_order_id.strip()
        ):
            raise ValidationError(f"schwab_order_id={schwab_order_id!r}: must be a non-empty str")
        if schwab_price_per_share_cents is not None:
            check_decimal("schwab_price_per_share_cents", schwab_price_per_share_cents, PRICE_CENTS)
        params.update(
            status=target.value,
            schwab_order_id=schwab_order_id,
            schwab_price_per_share_cents=schwab_price_per_share_cents,
        )
        with self._connection() as conn:
            row = None
            if target is not TradeStatus.PENDING:
                row = conn.execute(queries.UPDATE_TRADE_STATUS, params).fetchone()
            if row is not None:
                return trade_from_row(row, Trade)
            current = conn.execute(queries.SELECT_TRADE_STATUS, params).fetchone()
        if current is None:
            raise NotFound(f"no trade with tx_hash {params['tx_hash']} and log_index {log_index}")
        raise InvalidTransition(
            f"trade {params['tx_hash']}#{log_index} is {current[0]} "
            f"and cannot become {target.value}: "
            "only PENDING -> COMPLETED and PENDING -> FAILED are allowed"
        )

    def list(
        self,
        *,
        status: TradeStatus | str | None = None,
        ticker: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after_id: int | None = None,
    ) -> builtins.list[Trade]:
        """One page of trades by ascending id; pass the last id as ``after_id`` for the next.

        ``since`` is inclusive and ``until`` exclusive, both on created_at.
        """
        if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
            raise ValidationError(f"limit={limit!r}: must be an int from 1 to {MAX_PAGE}")
        if after_id is not None and type(after_id) is not int:
            raise ValidationError(f"after_id={after_id!r}: must be an int")
        _aware("since", since)
        _aware("until", until)
        sql, params = queries.list_trades(
            status=None if status is None else _status(status).value,
            ticker=ticker,
            since=since,
            until=until,
            limit=limit,
            after_id=0 if after_id is None else after_id,
        )
        with self._connection() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [trade_from_row(row, Trade) for row in rows]

    def pending(self) -> builtins.list[Trade]:
        """Every PENDING trade, oldest id first."""
        with self._connection() as conn:
            rows = conn.execute(queries.SELECT_PENDING_TRADES).fetchall()
        return [trade_from_row(row, Trade) for row in rows]

    def count(self, status: TradeStatus | str | None = None) -> int:
        """How many trades there are (with that status, when given)."""
        with self._connection() as conn:
            if status is None:
                row = conn.execute(queries.COUNT_TRADES).fetchone()
            else:
                row = conn.execute(
                    queries.COUNT_TRADES_BY_STATUS, {"status": _status(status).value}
                ).fetchone()
        assert row is not None
        return int(row[0])


class SchwabAuthRepository:
    """The single row of Schwab tokens."""

    __slots__ = ("_connection",)

    def __init__(self, connection: ConnectionSource) -> None:
        self._connection = connection

    def save(self, auth: SchwabAuth) -> None:
        """Store ``auth``, replacing the tokens saved before."""
        if not isinstance(auth, SchwabAuth):
            raise ValidationError(f"save takes a SchwabAuth, not {type(auth).__name__}")
        with self._connection() as conn:
            conn.execute(queries.UPSERT_SCHWAB_AUTH, auth_params(auth))

    def load(self) -> SchwabAuth | None:
        """The saved tokens, or None before the first save."""
        with self._connection() as conn:
            row = conn.execute(queries.SELECT_SCHWAB_AUTH).fetchone()
        return None if row is None else auth_from_row(row, SchwabAuth)
