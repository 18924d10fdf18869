"""Importing the bot's second SQLite layout (trade batching): exact, checked, all or nothing."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from persistence import Database, Fill, Instruction, Settings, migrate
from persistence.import_sqlite import ImportFailed, Problem, import_sqlite
from persistence.import_sqlite.sample2 import EVENTS, STEPS
from tests import bot_store
from tests.test_batching import violations
from tests.test_import_sqlite import AUTH, cli

D = Decimal


def run(path: Path, url: str, **options: Any) -> tuple[Any, list[Problem]]:
    problems: list[Problem] = []
    result = import_sqlite(path, Settings.from_env(url=url), on_problem=problems.append, **options)
    return result, problems


@pytest.fixture
def layout2(tmp_path: Path) -> Path:
    return bot_store.write_batching(tmp_path / "bot.db", STEPS, events=EVENTS, auth=AUTH)


def test_the_second_layout_imports_exactly_and_consistently(
    layout2: Path, emptied_url: str
) -> None:
    result, problems = run(layout2, emptied_url)
    assert result.layout == "batching"
    assert {t: inserted for t, (_, _, inserted) in result.tables.items()} == {
        "onchain_trades": 8,
        "schwab_executions": 4,
        "trade_execution_links": 8,
        "trade_accumulators": 2,
        "event_queue": 2,
    }
    assert result.invalid == 0 and result.auth_inserted == 1
    assert violations(emptied_url) == {}
    with Database.connect(emptied_url) as db:
        assert db.fills.get(f"0x{3:064x}", 0).amount == D("0.7")
        assert db.fills.get(f"0x{3:064x}", 0).direction is Instruction.BUY
        aapl = db.accumulators.get("AAPL")
        # recomputed exactly from the fills (the file's doubles drifted): 0.45 long, 0.4 short
        assert (aapl.accumulated_long, aapl.accumulated_short) == (D("0.45"), D("0.4"))
        assert aapl.pending_execution_id == 4
        assert db.executions.pending("MSFT")[0].shares == 1
        first = db.executions.get(1)
        assert first.status.value == "COMPLETED" and first.price_cents == D(15025)
        assert [(k.trade_id, k.contributed_shares) for k in db.executions.links(1)] == [
            (1, D("0.1")),
            (2, D("0.2")),
            (3, D("0.7")),
        ]
        assert db.events.count_unprocessed() == 1
        with db.transaction() as tx:
            event = tx.events.claim_next()
            assert event.payload == {"symbol": "MSFT", "nested": {"a": [1, None]}}
            assert event.tx_hash == f"0x{9:064x}"  # lower-cased
        assert [(k.trade_id, k.contributed_shares) for k in db.executions.links(4)] == [
            (4, D("0.35")),
            (5, D("0.65")),
        ]
        # the library carries on from the imported state, with the imported ids
        recorded = db.fills.record(Fill(f"0x{10:064x}", 0, "AAPL", D("0.6"), "SELL", D("150")))
        assert (recorded.trade_id, recorded.execution) == (9, None)
        db.executions.complete(4, order_id="A", price_cents=1)
        [following] = db.executions.pending("AAPL")
        assert following.id == 5
        assert [(k.trade_id, k.contributed_shares) for k in db.executions.links(5)] == [
            (5, D("0.25")),
            (8, D("0.15")),
            (9, D("0.6")),
        ]
    assert violations(emptied_url) == {}
    assert all(p.kind == "note" for p in problems)


def test_the_cli_names_the_layout_and_a_rerun_inserts_nothing(
    layout2: Path, emptied_url: str, tmp_path: Path
) -> None:
    report = tmp_path / "report.jsonl"
    first = cli(str(layout2), "--database-url", emptied_url, "--report", str(report))
    assert first.returncode == 0, first.stderr
    assert "second layout (trade batching)" in first.stdout
    assert "onchain_trades: read 8, 0 invalid, inserted 8" in first.stdout
    again = cli(str(layout2), "--database-url", emptied_url, "--report", str(report))
    assert again.returncode == 0, again.stderr
    assert "onchain_trades: read 8, 0 invalid, inserted 0" in again.stdout
    with psycopg.connect(emptied_url) as conn:
        assert conn.execute("SELECT count(*) FROM onchain_trades").fetchone() == (8,)


def _corrupt(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement)
    conn.close()


@pytest.mark.parametrize(
    ("statement", "table", "column", "reason"),
    [
        (
            "UPDATE onchain_trades SET amount = 1e-30 WHERE id = 7",
            "onchain_trades",
            "amount",
            "decimal places",
        ),
        (
            "UPDATE onchain_trades SET symbol = 'A_VERY_LONG_SYMBOL' WHERE id = 7",
            "onchain_trades",
            "symbol",
            "longer than 16",
        ),
        (
            "UPDATE onchain_trades SET amount = 0.05 WHERE id = 3",
            "onchain_trades",
            "amount",
            "linked beyond its amount",
        ),
        (
            "UPDATE trade_execution_links SET contributed_shares = 0.5 WHERE id = 1",
            "schwab_executions",
            "shares",
            "links add up to",
        ),
        (
            "UPDATE trade_accumulators SET accumulated_long = 0.9 WHERE symbol = 'AAPL'",
            "trade_accumulators",
            "accumulated_long",
            "does not match its fills",
        ),
        (
            "UPDATE schwab_executions SET price_cents = 0 WHERE id = 1",
            "schwab_executions",
            "price_cents",
            "greater than zero",
        ),
        (
            "UPDATE onchain_trades SET tx_hash = '0x12' WHERE id = 8",
            "onchain_trades",
            "tx_hash",
            "64 hexadecimal",
        ),
    ],
)
def test_an_invalid_row_fails_the_import_and_writes_nothing(
    layout2: Path, emptied_url: str, statement: str, table: str, column: str, reason: str
) -> None:
    _corrupt(layout2, statement)
    problems: list[Problem] = []
    with pytest.raises(ImportFailed, match="nothing was imported"):
        import_sqlite(
            layout2,
            Settings.from_env(url=emptied_url),
            on_problem=problems.append,
            skip_invalid=True,
        )
    invalid = [(p.table, p.column) for p in problems if p.kind == "invalid" and reason in p.reason]
    assert invalid == [(table, column)], problems
    with psycopg.connect(emptied_url) as conn:
        assert conn.execute("SELECT count(*) FROM onchain_trades").fetchone() == (0,)


def test_invalid_rows_are_named(layout2: Path, emptied_url: str) -> None:
    _corrupt(layout2, "UPDATE onchain_trades SET amount = 0.05 WHERE id = 3")
    problems: list[Problem] = []
    with pytest.raises(
        ImportFailed, match=r"1 in onchain_trades, 1 in trade_accumulators.*cannot be skipped"
    ):
        import_sqlite(
            layout2,
            Settings.from_env(url=emptied_url),
            on_problem=problems.append,
            skip_invalid=True,
        )
    invalid = {(p.table, p.sqlite_id, p.column): p.reason for p in problems if p.kind == "invalid"}
    assert "linked beyond its amount: 0.7 of 0.05" in invalid["onchain_trades", 3, "amount"]
    # and so its symbol's accumulator no longer matches what its fills leave
    assert "does not match" in invalid["trade_accumulators", "AAPL", "accumulated_long"]


def test_events_that_do_not_parse_are_invalid_and_may_be_skipped(
    tmp_path: Path, emptied_url: str
) -> None:
    events = [
        (f"0x{1:064x}", 0, 1, "{not json", 0, None),
        (f"0x{2:064x}", 0, 2, "[1, 2]", 0, None),
        (f"0x{3:064x}", 0, 3, '{"ok": true}', 0, None),
        (f"0x{4:064x}", 0, 4, '{"x": NaN}', 0, None),
        (f"0x{5:064x}", 0, 5, "{}", 0, "2026-03-01 12:00:00"),
    ]
    path = bot_store.write_batching(tmp_path / "bot.db", STEPS[:3], events=events)
    with pytest.raises(ImportFailed, match="4 in event_queue"):
        run(path, emptied_url)
    result, problems = run(path, emptied_url, skip_invalid=True)
    assert result.tables["event_queue"] == (5, 4, 1)
    reasons = {p.sqlite_id: p.reason for p in problems if p.kind == "invalid"}
    assert set(reasons) == {1, 2, 4, 5}
    assert "not a JSON object" in reasons[2] and "processed_at is set" in reasons[5]


def test_keys_equal_once_lower_cased_name_both_rows(tmp_path: Path, emptied_url: str) -> None:
    events = [
        (f"0x{'ab' * 32}", 0, 1, "{}", 0, None),
        (f"0x{'AB' * 32}", 0, 2, "{}", 0, None),
    ]
    path = bot_store.write_batching(tmp_path / "bot.db", STEPS[:3], events=events)
    result, problems = run(path, emptied_url, skip_invalid=True)
    assert result.tables["event_queue"] == (2, 2, 0)
    assert sorted(p.sqlite_id for p in problems if p.kind == "invalid") == [1, 2]


def test_a_dry_run_on_an_empty_database_writes_nothing(
    layout2: Path, empty_database_url: str
) -> None:
    result, _ = run(layout2, empty_database_url, dry_run=True)
    assert result.dry_run and result.tables["onchain_trades"] == (8, 0, 8)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('onchain_trades')").fetchone() == (None,)


def test_other_batching_data_in_the_target_is_refused(layout2: Path, emptied_url: str) -> None:
    migrate.apply(Settings(url=emptied_url))
    with Database.connect(emptied_url) as db:
        db.fills.record(Fill(f"0x{99:064x}", 0, "TSLA", D("0.5"), "BUY", D("200")))
    with pytest.raises(ImportFailed, match="already holds other trade-batching data"):
        run(layout2, emptied_url)
