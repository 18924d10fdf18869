"""The checks of the SQLite import that a mutation probe could disable unnoticed.

For the second layout: the row-by-row comparison of what was stored with the file re-read, the
row counts, the required tables; and for both, which layout a file holds. A check that reads
what PostgreSQL stored can only be seen failing when what is stored differs from what was
sent: a trigger on the target's table changes the rows on their way in (COPY fires row
triggers), which is what a faulty conversion, driver or server would do.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from persistence import Settings, migrate
from persistence.import_sqlite import ImportFailed, Problem, import_sqlite, sample3
from tests import bot_store
from tests.test_batching import violations
from tests.test_import_batching import EVENTS, STEPS

# two fills at two prices, one execution of a share drawn from both, completed
PRICED = [
    ("fill", f"0x{1:064x}", 0, "AAPL", 0.4, "BUY", 150.25),
    ("fill", f"0x{2:064x}", 0, "AAPL", 0.8, "BUY", 151.5),
    ("complete", "AAPL"),
]


def run(path: Path, url: str, **options: Any) -> Any:
    problems: list[Problem] = []
    return import_sqlite(path, Settings.from_env(url=url), on_problem=problems.append, **options)


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    assert row is not None
    return int(row[0])


def with_trigger(url: str, table: str, body: str) -> None:
    """Migrate the target and put a BEFORE INSERT trigger running ``body`` on ``table``."""
    migrate.apply(Settings(url=url))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION on_the_way_in() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN {body} END $$"
        )
        conn.execute(
            f'CREATE TRIGGER on_the_way_in BEFORE INSERT ON "{table}" '
            "FOR EACH ROW EXECUTE FUNCTION on_the_way_in()"
        )


def drop_trigger(url: str, table: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP TRIGGER on_the_way_in ON "{table}"')


# --- the second layout's verification ---------------------------------------------------------


def test_a_stored_row_that_differs_from_the_file_fails_the_import(
    tmp_path: Path, empty_database_url: str
) -> None:
    """Two fills' prices swapped on the way in: every count, sum and invariant still holds;
    only the row-by-row comparison sees it."""
    path = bot_store.write_batching(tmp_path / "bot.db", PRICED)
    with_trigger(
        empty_database_url,
        "onchain_trades",
        "NEW.price_usdc := CASE NEW.id WHEN 1 THEN 151.5 WHEN 2 THEN 150.25 "
        "ELSE NEW.price_usdc END; RETURN NEW;",
    )
    with pytest.raises(
        ImportFailed,
        match=r"verification failed: onchain_trades \(1,\) price_usdc is 150\.25 in the file "
        r"and 151\.5(0*) in PostgreSQL.*nothing was imported",
    ):
        run(path, empty_database_url)
    assert count(empty_database_url, "onchain_trades") == 0
    assert count(empty_database_url, "schwab_executions") == 0

    # the control: the same file, stored as sent, imports
    drop_trigger(empty_database_url, "onchain_trades")
    result = run(path, empty_database_url)
    assert result.tables["onchain_trades"] == (2, 0, 2)
    assert violations(empty_database_url) == {}


@pytest.mark.parametrize(
    ("table", "dropped", "message"),
    [
        ("event_queue", "NEW.id = 2", "event_queue holds 1 rows for 2 inserted"),
        ("trade_accumulators", "NEW.symbol = 'MSFT'", "trade_accumulators holds 1 rows for 2"),
    ],
)
def test_a_row_count_that_differs_fails_the_import(
    tmp_path: Path, empty_database_url: str, table: str, dropped: str, message: str
) -> None:
    """A row lost on the way in, from a table no other check reads back row by row."""
    path = bot_store.write_batching(tmp_path / "bot.db", STEPS, events=EVENTS)
    with_trigger(empty_database_url, table, f"IF {dropped} THEN RETURN NULL; END IF; RETURN NEW;")
    with pytest.raises(ImportFailed, match=f"verification failed: {message}.*nothing was imported"):
        run(path, empty_database_url)
    for name in ("onchain_trades", "event_queue", "trade_accumulators"):
        assert count(empty_database_url, name) == 0


# --- the second layout's tables -------------------------------------------------------------


@pytest.mark.parametrize(
    "missing", ["schwab_executions", "trade_accumulators", "trade_execution_links"]
)
def test_a_second_layout_file_without_a_required_table_is_refused(
    tmp_path: Path, empty_database_url: str, missing: str
) -> None:
    path = bot_store.write_batching(tmp_path / "bot.db", STEPS, events=EVENTS)
    conn = sqlite3.connect(path)
    conn.execute(f"DROP TABLE {missing}")
    conn.close()
    with pytest.raises(
        ImportFailed, match=f"has onchain_trades but not {missing}: not the bot's trade-batching"
    ):
        run(path, empty_database_url)
    with psycopg.connect(empty_database_url) as target:  # refused before the target is touched
        assert target.execute("SELECT to_regclass('onchain_trades')").fetchone() == (None,)


def test_a_second_layout_file_from_before_the_event_queue_imports(
    tmp_path: Path, empty_database_url: str
) -> None:
    """event_queue is the one table the bot added later: a file without it is not refused."""
    path = bot_store.write_batching(tmp_path / "bot.db", STEPS)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE event_queue")
    conn.close()
    result = run(path, empty_database_url)
    assert result.layout == "batching"
    assert result.tables["event_queue"] == (0, 0, 0)
    assert result.tables["onchain_trades"] == (8, 0, 8)


# --- which layout -----------------------------------------------------------------------------


def test_a_first_layout_file_is_read_as_trades(tmp_path: Path, emptied_url: str) -> None:
    path = bot_store.write(tmp_path / "bot.db", [bot_store.row(1), bot_store.row(2)])
    result = run(path, emptied_url)
    assert result.layout == "trades"
    assert (result.trades_read, result.trades_inserted) == (2, 2)
    assert result.tables == {}
    assert count(emptied_url, "trades") == 2
    assert count(emptied_url, "onchain_trades") == 0


def test_a_second_layout_file_is_read_as_batching(tmp_path: Path, emptied_url: str) -> None:
    path = bot_store.write_batching(tmp_path / "bot.db", STEPS, events=EVENTS)
    result = run(path, emptied_url)
    assert result.layout == "batching"
    assert (result.trades_read, result.trades_inserted) == (0, 0)
    assert set(result.tables) == {
        "onchain_trades",
        "schwab_executions",
        "trade_accumulators",
        "trade_execution_links",
        "event_queue",
    }
    assert count(emptied_url, "onchain_trades") == 8
    assert count(emptied_url, "trades") == 0


@pytest.mark.parametrize(
    "schema",
    [
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)",
        "CREATE TABLE trade (id INTEGER PRIMARY KEY, tx_hash TEXT)",  # near, but not the name
        None,  # a SQLite database with no table at all
    ],
)
def test_a_file_of_neither_layout_is_refused(
    tmp_path: Path, empty_database_url: str, schema: str | None
) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute(schema or "PRAGMA user_version = 1")  # the file exists, as a database
    conn.commit()
    conn.close()
    with pytest.raises(
        ImportFailed,
        match=re.escape(
            f"{path} has neither a trades nor an onchain_trades table: is it the bot's"
        ),
    ):
        run(path, empty_database_url)
    with psycopg.connect(empty_database_url) as target:
        assert target.execute("SELECT to_regclass('trades')").fetchone() == (None,)


# --- the third layout's verification of events -------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("""NEW.payload := NEW.payload || '{"x": 1}'""", "event rowid 3 payload"),
        ("""NEW.payload := '{"n": 3.0}'""", "event rowid 3 payload"),  # same value, respelled
        ("""NEW.payload := '{"n": true}'""", "event rowid 3 payload"),
        ("""NEW.metadata := '{"by": "trigger"}'""", "event rowid 3 metadata"),
        ("NEW.event_version := '2'", "event rowid 3 identity"),
        ("RETURN NULL", "event rowid 3 identity"),  # lost: the next stored is rowid 4
    ],
)
def test_an_event_that_differs_from_the_file_fails_the_import(
    tmp_path: Path, empty_database_url: str, change: str, named: str
) -> None:
    """Verification compares every event with the file re-read: whatever changes one on the
    way in (here a trigger) is named, and nothing is written."""
    path = tmp_path / "bot.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(sample3.SCHEMA)
        for n in range(1, 6):
            sample3.add_event(conn, "Position", "AAPL", n, {"n": n})
    with_trigger(
        empty_database_url, "events", f"IF NEW.position = 3 THEN {change}; END IF; RETURN NEW;"
    )
    with pytest.raises(ImportFailed, match=f"verification failed: {named} differs"):
        run(path, empty_database_url)
    assert count(empty_database_url, "events") == 0
