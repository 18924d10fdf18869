"""The connection's own cursor (``runners._cursor``): a statement of one row that
``Database.run`` runs alone on a connection reuses it; a transaction's statements, which user
code may share between threads or tasks, and results of many rows take a cursor each."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row, tuple_row

from persistence import AsyncDatabase, Database
from persistence.operations import ALL, Query
from tests.bridge import Loop, unbridged


def _value(n: int) -> Query[int]:
    return Query("SELECT %(n)s::int", {"n": n}, decode=lambda row: row[0])


def test_an_idle_connection_keeps_no_large_result(
    database_url: str, open_database: Callable[..., Any]
) -> None:
    """Statements of one row reuse the connection's cursor (``runners._cursor``), which keeps
    its last result until the next statement; many rows take a cursor of their own."""
    rows = Query("SELECT generate_series(1, 5000)", fetch=ALL, decode=len)
    with open_database(database_url, min_size=1, max_size=1) as db:
        assert db.run(_value(1)) == 1
        assert db.run(rows) == 5000
        conn = db.pool.getconn()
        try:
            kept = unbridged(conn).point_cursor.pgresult
            assert kept is not None and kept.ntuples == 1  # _value(1)'s row, not the 5,000
        finally:
            db.pool.putconn(unbridged(conn))


def test_threads_sharing_a_transaction_each_get_their_own_rows(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg's connection is safe to share between threads, its cursors are not: a statement
    inside a transaction gets a cursor of its own. The window between a statement and its fetch
    is widened here so that a shared cursor shows (it did, in about 9 calls of 10)."""
    fetchone = psycopg.Cursor.fetchone

    def slow_fetchone(cursor: Any) -> Any:
        time.sleep(0.001)
        return fetchone(cursor)

    monkeypatch.setattr(psycopg.Cursor, "fetchone", slow_fetchone)
    with Database.connect(database_url, min_size=1, max_size=1) as db, db.transaction() as tx:
        got: dict[int, list[Any]] = {n: [] for n in range(8)}

        def ask(n: int) -> None:
            for _ in range(10):
                got[n].append(tx.run(_value(n)))

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert got == {n: [n] * 10 for n in range(8)}


def test_tasks_sharing_a_pipelined_transaction_each_get_their_own_rows(
    database_url: str, loop: Loop
) -> None:
    """User code may put a transaction's connection in pipeline mode: the library's statements
    gathered on it are then in flight together, each on a cursor of its own."""

    async def scenario() -> list[Any]:
        db = await AsyncDatabase.connect(database_url, min_size=1, max_size=1)
        try:
            async with db.transaction() as tx, tx.connection.pipeline():
                return await asyncio.gather(*(tx.run(_value(n)) for n in range(50)))
        finally:
            await db.close()

    assert loop.run(scenario()) == list(range(50))


def test_a_row_factory_changed_inside_a_transaction_does_not_stay_with_the_connection(
    database_url: str, open_database: Callable[..., Any]
) -> None:
    row = Query("SELECT 7 AS seven", decode=lambda row: row)
    with open_database(database_url, min_size=1, max_size=1) as db:
        with db.transaction() as tx:
            unbridged(tx.connection).row_factory = dict_row
            assert tx.run(row) == {"seven": 7}  # the user's choice, inside the block
            unbridged(tx.connection).row_factory = tuple_row
        assert db.run(row) == (7,)
        assert db.run(_value(5)) == 5
