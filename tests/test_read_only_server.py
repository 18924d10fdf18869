"""A write that reaches a read-only server: a primary demoted under a pooled connection.

After a switchover, or a proxy that routed a connection to a node before Patroni's REST API
caught up, a pooled connection may sit on a server that no longer accepts writes. The write
raises DatabaseUnavailable (a retry is safe), and that connection is dropped, so that the
retry opens a new one, which goes where writes go now. Simulated here by the database's
``default_transaction_read_only`` (applied to new sessions): set, the server is "demoted";
reset, a new connection is "on the primary" while the old one would still refuse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from persistence import DatabaseUnavailable, Settings, migrate
from tests.factories import make_trade
from tests.support import create_database, drop_database, with_database

pytestmark = pytest.mark.db


@pytest.fixture
def demotable(admin_url: str) -> Iterator[tuple[str, Callable[[bool], None]]]:
    """A migrated database of its own, and ``read_only(on)`` for its new sessions."""
    name = create_database(admin_url, "persistence_read_only")
    url = with_database(admin_url, name)

    def read_only(on: bool) -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            statement = "ALTER DATABASE {} SET default_transaction_read_only = on"
            if not on:
                statement = "ALTER DATABASE {} RESET default_transaction_read_only"
            conn.execute(sql.SQL(statement).format(sql.Identifier(name)))

    try:
        migrate.apply(Settings(url=url))
        yield url, read_only
    finally:
        drop_database(admin_url, name)


def test_a_write_on_a_read_only_server_raises_and_the_retry_reaches_the_primary(
    demotable: tuple[str, Callable[[bool], None]], open_database: Callable[..., Any]
) -> None:
    url, read_only = demotable
    read_only(True)
    # one connection: a retry on the same one would fail the same way
    with open_database(url, min_size=1, max_size=1) as db:
        trade = make_trade()
        with pytest.raises(DatabaseUnavailable, match="the server is read-only") as raised:
            db.trades.insert(trade)
        assert "a retry goes where writes go now" in str(raised.value)
        with pytest.raises(DatabaseUnavailable, match="read-only"), db.transaction() as tx:
            tx.trades.insert(trade)
        read_only(False)  # "promoted": new sessions write
        # the pool may have opened a replacement before the promotion, as a proxy may route a
        # new connection to the old node for a moment: that one is dropped in turn
        for _ in range(3):
            try:
                trade_id = db.trades.insert(trade)  # the same handle, a new connection
                break
            except DatabaseUnavailable as retry:
                assert "read-only" in str(retry)
        assert db.trades.get(trade.tx_hash, trade.log_index).id == trade_id
