"""Importing the third layout's other tables: views with generated columns, the PnL ledger and its
checkpoint, operational tables and telemetry, and a table the importer has never met."""

from __future__ import annotations

import io
import json
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from persistence import Database, NewEvent
from persistence.import_sqlite import ImportFailed, layout3_tables
from persistence.import_sqlite._report import Progress
from persistence.import_sqlite.sample3 import (
    READ_MODELS,
    SCHEMA,
    add_event,
    add_many,
    make_sample,
)
from tests.event_store_support import read_everything
from tests.support import environment_without, kill_during_copy, run_as_written, shell_blocks
from tests.test_import_events import run


def columns(url: str, table: str) -> dict[str, tuple[str, str | None]]:
    """Each column's type and generation expression, as PostgreSQL holds them."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name, data_type, generation_expression FROM information_schema.columns"
            " WHERE table_name = %s",
            (table,),
        ).fetchall()
    return {name: (kind, generated) for name, kind, generated in rows}


def fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def store(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA + READ_MODELS)
    add_event(conn, "Position", "AAPL", 1, {"Live": {"symbol": "AAPL"}})
    return conn


def test_every_table_is_carried_in_the_type_that_keeps_its_values(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    make_sample(path)
    result, problems = run(path, empty_database_url)
    assert problems == []
    url = empty_database_url
    for table in ("position_view", "pnl_onchain_fill", "skipped_fills", "backfill_checkpoints"):
        assert result.tables[table][2] == result.tables[table][0] > 0, table
        assert result.verified[table].endswith("re-read, every column")
    fill = columns(url, "pnl_onchain_fill")
    assert fill["shares"][0] == fill["price_usd"][0] == "numeric"  # every value round-trips
    assert fill["executed_at"][0] == fill["symbol"][0] == "text"  # RFC 3339 strings kept
    assert fill["log_index"][0] == "bigint"
    assert fetch(url, "SELECT price_usd::text, executed_at FROM pnl_onchain_fill") == [
        ("150.25", "2026-03-01T12:00:00.5Z"),
        ("240.10", "2026-03-01T12:00:01.5Z"),  # the trailing zero stays
        ("151.00", "2026-03-01T12:00:02.5Z"),
    ]
    view = columns(url, "position_view")
    assert view["payload"][0] == "jsonb"
    assert view["symbol"] == ("text", "(payload #>> ARRAY['Live'::text, 'symbol'::text])")
    assert view["net"][1] is not None  # SQLite's VIRTUAL generated column, stored here
    assert fetch(url, "SELECT view_id, symbol, net FROM position_view ORDER BY view_id") == [
        ("AAPL", "AAPL", "1.25"),
        ("TSLA", "TSLA", "1.25"),
    ]
    indexes = dict(fetch(url, "SELECT indexname, indexdef FROM pg_indexes"))
    assert indexes["idx_position_view_symbol"].endswith("WHERE (symbol IS NOT NULL)")
    assert "(symbol)" in indexes["idx_pnl_onchain_fill_symbol"]
    assert "(chain, orderbook)" in indexes["backfill_checkpoints_pkey"]
    assert next_sample_id(url) == 3  # an INTEGER PRIMARY KEY continues above SQLite's ids


def next_sample_id(url: str) -> int:
    """The id PostgreSQL gives a new telemetry sample."""
    [(new,)] = fetch(
        url,
        "INSERT INTO block_lag_samples (sampled_at, orderbook, chain_tip) "
        "VALUES ('2026-03-01T12:00:13.000Z', 'x', 1) RETURNING id",
    )
    return int(new)


def test_autoincrement_ids_continue_above_deleted_ones(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    make_sample(path)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO block_lag_samples VALUES (90, 'a', 'b', 1, 1)")
        conn.execute("DELETE FROM block_lag_samples WHERE id = 90")  # sqlite_sequence keeps 90
    run(path, empty_database_url)
    assert next_sample_id(empty_database_url) == 91


def test_a_decimal_column_whose_values_would_be_respelled_stays_text(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    with store(path) as conn:
        for rowid, shares in ((1, "1.50"), (2, "1e5"), (3, "007")):
            conn.execute(
                "INSERT INTO pnl_onchain_fill VALUES (?, 'AAPL', '0x1', 0, ?, 'Buy', ?, 't')",
                (rowid, shares, "-0.00" if rowid == 3 else "2.5"),
            )
    run(path, empty_database_url)
    kinds = columns(empty_database_url, "pnl_onchain_fill")
    assert kinds["shares"][0] == "text"  # numeric would give 100000 and 7 back
    assert kinds["price_usd"][0] == "text"  # numeric has no negative zero
    got = fetch(empty_database_url, "SELECT shares, price_usd FROM pnl_onchain_fill ORDER BY 1")
    assert got == [("007", "-0.00"), ("1.50", "2.5"), ("1e5", "2.5")]


def test_a_table_the_importer_never_met_is_carried_exactly(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    with store(path) as conn:
        conn.execute(
            "CREATE TABLE mystery (name TEXT, ratio REAL, blob BLOB, n, at DATETIME, "
            "flag BOOLEAN, doc JSON, cost NUMERIC)"
        )
        conn.execute(
            "INSERT INTO mystery VALUES ('é\U0001f600', 0.1, x'00ff', 2, "
            "'2026-03-01 12:00:00', 1, '[1, 2.50]', 0.1)"
        )
        conn.execute("INSERT INTO mystery VALUES (NULL, NULL, NULL, NULL, NULL, 0, NULL, 7)")
    _, problems = run(path, empty_database_url)
    assert problems == []
    kinds = {c: k for c, (k, _) in columns(empty_database_url, "mystery").items()}
    assert kinds == {
        "name": "text",
        "ratio": "double precision",
        "blob": "bytea",
        "n": "bigint",
        "at": "timestamp with time zone",
        "flag": "boolean",
        "doc": "jsonb",
        "cost": "numeric",
    }
    row = fetch(empty_database_url, "SELECT *, doc::text, cost::text FROM mystery WHERE n = 2")[0]
    assert row[:3] == ("é\U0001f600", 0.1, b"\x00\xff")
    assert row[8:] == ("[1, 2.50]", "0.1000000000000000055511151231257827021181583404541015625")


@pytest.mark.parametrize(
    ("sql", "column", "reason"),
    [
        (
            "INSERT INTO skipped_fills VALUES ('0x1', 1, 'E', 'r', 'a' || char(0) || 'b', 't')",
            "detail",
            "NUL",
        ),
        ("INSERT INTO skipped_fills VALUES ('0x1', 'one', 'E', 'r', 'd', 't')", "log_index", "str"),
        (
            "INSERT INTO skipped_fills VALUES (CAST(x'ff41' AS TEXT), 1, 'E', 'r', 'd', 't')",
            "tx_hash",
            "UTF-8",
        ),
        (
            """INSERT INTO position_view (view_id, version, payload)
               VALUES ('MSFT', 1, '{"Live": {"symbol": "A", "symbol": "B"}}')""",
            "payload",
            "twice",
        ),
        (
            """INSERT INTO position_view (view_id, version, payload)
               VALUES ('MSFT', 1, '{"Live": {"symbol": "MSFT", "net": 1.50}}')""",
            "net",
            "#>> would give '1.50'",
        ),
    ],
)
def test_a_value_postgresql_would_not_hold_exactly_is_named(
    tmp_path: Path, empty_database_url: str, sql: str, column: str, reason: str
) -> None:
    path = tmp_path / "bot.db"
    with store(path) as conn:
        conn.execute("INSERT INTO skipped_fills VALUES ('0x2', 1, 'E', 'r', 'fine', 't')")
        conn.execute(sql)
    with pytest.raises(ImportFailed, match="1 invalid row"):
        run(path, empty_database_url)
    assert fetch(empty_database_url, "SELECT count(*) FROM events") == [(0,)]
    result, problems = run(path, empty_database_url, skip_invalid=True)
    [problem] = problems
    assert problem.column == column and reason in problem.reason, problem
    table = problem.table
    assert result.tables[table] == (
        2 if table == "skipped_fills" else 1,
        1,
        1 if table == "skipped_fills" else 0,
    )


def test_skip_invalid_leaves_out_the_view_rows_of_a_left_out_aggregate(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    make_sample(path)
    with sqlite3.connect(path) as conn:
        add_event(conn, "Position", "TSLA", 2, '{"a": 1, "a": 2}')
    result, problems = run(path, empty_database_url, skip_invalid=True)
    assert [(p.kind, p.table, p.sqlite_id) for p in problems if p.kind == "note"] == [
        ("note", "position_view", 2)  # TSLA's row, by rowid
    ]
    assert fetch(empty_database_url, "SELECT view_id FROM position_view") == [("AAPL",)]
    assert result.tables["position_view"] == (2, 0, 1)


def test_a_generated_column_other_than_json_extract_is_refused(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    with store(path) as conn:
        conn.execute(
            "CREATE TABLE odd_view (view_id TEXT PRIMARY KEY, payload JSON, "
            "n TEXT GENERATED ALWAYS AS (upper(payload)) STORED)"
        )
    with pytest.raises(ImportFailed, match=r"odd_view.n is generated by 'upper\(payload\)'"):
        run(path, empty_database_url)


def test_a_table_postgresql_already_holds_is_refused(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    make_sample(path)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE skipped_fills (x int)")
    with pytest.raises(ImportFailed, match="already holds skipped_fills"):
        run(path, empty_database_url)
    assert fetch(empty_database_url, "SELECT to_regclass('position_view')") == [(None,)]


def test_verification_catches_a_conversion_that_changes_a_value(
    tmp_path: Path, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bot.db"
    make_sample(path)
    convert = layout3_tables.convert

    def rounding(column: Any, value: Any, notes: Any) -> Any:
        converted = convert(column, value, notes)
        return converted.quantize(1) if column.kind == "numeric" else converted

    monkeypatch.setattr(layout3_tables, "convert", rounding)
    with pytest.raises(ImportFailed, match="verification failed: a row of pnl_onchain_fill"):
        run(path, empty_database_url)
    assert fetch(empty_database_url, "SELECT to_regclass('pnl_onchain_fill')") == [(None,)]


def test_the_ledger_checkpoint_keeps_meaning_the_same_event(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    make_sample(path)
    with sqlite3.connect(path) as conn:
        last_rowid = conn.execute("SELECT last_rowid FROM pnl_ledger_checkpoint").fetchone()[0]
        after = conn.execute(
            "SELECT rowid FROM events WHERE rowid > ? ORDER BY rowid", (last_rowid,)
        ).fetchall()
    result, _ = run(path, empty_database_url)
    assert result.verified["checkpoint pnl_ledger"].startswith(f"position {last_rowid} ")
    handled: list[int] = []
    with Database.connect(empty_database_url) as db:
        db.event_store.append(
            "Position", "MSFT", [NewEvent("FillApplied", {"amount": "1"})], expected_sequence=0
        )
        # readable once no write transaction older than the append runs on the server
        read_everything(db, count=result.tables["events"][2] + 1)

        def handler(tx: Any, events: list[Any]) -> None:
            handled.extend(e.position for e in events)

        # the same version: no rebuild; the events after the checkpoint's event, then the new one
        while db.event_store.project("pnl_ledger", handler, version=2):
            pass
    assert handled[: len(after)] == [r[0] for r in after] and len(handled) == len(after) + 1


def cli(path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "persistence.import_sqlite",
            str(path),
            "--database-url",
            url,
            "--report",
            str(path.with_suffix(".jsonl")),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=environment_without("DATABASE_URL"),
        timeout=300,
    )


def test_progress_is_a_line_per_phase_off_a_terminal_and_quiet_silences_it(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    make_sample(path)
    done = cli(path, empty_database_url, "--dry-run")
    assert done.returncode == 0, done.stderr
    phases = [line.split(": ")[0:2] for line in done.stderr.splitlines()]
    assert ["events", "checked, written"] in phases  # COPYed as checked: every row is valid
    assert ["events", "verified"] in phases and ["position_view", "verified"] in phases
    line = r"^events: checked, written: 7 rows in [\d.]+ s \([\d,]+ rows/s\)$"
    assert re.search(line, done.stderr, re.M)
    quiet = cli(path, empty_database_url, "--dry-run", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_redrawn_with_rows_rate_and_phase() -> None:
    stream = Terminal()
    bar = Progress(4, stream, "events: checked")
    bar.update(2, final=False)
    bar.update(4, final=True)
    shown = stream.getvalue()
    assert shown.startswith("\r") and shown.endswith("\n") and shown.count("\r") == 2
    assert "events: checked: [" in shown and "4/4 rows" in shown and "rows/s" in shown


@pytest.mark.parametrize("layout", ["1", "2", "3"])
def test_each_layouts_sample_imports_cleanly(
    tmp_path: Path, empty_database_url: str, layout: str
) -> None:
    path = tmp_path / "sample.db"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "persistence.import_sqlite",
            "--make-sample",
            str(path),
            "--layout",
            layout,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    names = {"1": "first layout (trades)", "2": "second layout", "3": "third layout"}
    done = cli(path, empty_database_url, "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"holds the bot's {names[layout]}" in done.stdout
    report = path.with_suffix(".jsonl").read_text().splitlines()
    assert "invalid" not in {json.loads(line)["kind"] for line in report}  # notes: layout 2's drift
    again = subprocess.run(
        [sys.executable, "-m", "persistence.import_sqlite", "--make-sample", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "exists" in again.stderr  # never overwrites a file


@pytest.mark.slow
def test_kill_9_mid_import_writes_nothing_and_a_rerun_succeeds(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    make_sample(path)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM events WHERE aggregate_type = 'Inventory'")  # appended after
        conn.execute("DELETE FROM snapshots WHERE aggregate_type = 'Inventory'")
        add_many(conn, 300_000)
    importer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "persistence.import_sqlite",
            str(path),
            "--database-url",
            empty_database_url,
            "--report",
            str(tmp_path / "r"),
            "--quiet",
        ],
        env=environment_without("DATABASE_URL"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_during_copy(importer, empty_database_url, "COPY events %")
    assert importer.returncode == -signal.SIGKILL
    assert fetch(empty_database_url, "SELECT count(*) FROM events") == [(0,)]
    assert fetch(empty_database_url, "SELECT count(*) FROM checkpoints") == [(0,)]
    assert fetch(empty_database_url, "SELECT to_regclass('position_view')") == [(None,)]
    result, problems = run(path, empty_database_url)
    assert problems == [] and result.tables["events"] == (300_006, 0, 300_006)
    with sqlite3.connect(path) as conn:
        rowids = conn.execute("SELECT sum(rowid), max(rowid) FROM events").fetchone()
    assert fetch(empty_database_url, "SELECT sum(position), max(position) FROM events") == [
        (rowids[0], rowids[1])
    ]
    assert result.tables["position_view"] == (2, 0, 2)


DOC = Path(__file__).resolve().parent.parent / "docs" / "migrating-from-sqlite.md"


def test_the_documented_layout3_steps_run_as_written(
    tmp_path: Path, empty_database_url: str
) -> None:
    (block,) = [b for b in shell_blocks(DOC) if "--make-sample" in b]
    env = {**environment_without("PYTEST_*"), "DATABASE_URL": empty_database_url}
    made, dry, done = run_as_written(block, env, cwd=tmp_path)
    assert "wrote the bot's layout 3" in made.printed
    assert "dry run: nothing written" in dry.printed
    assert "holds the bot's third layout (the event store)" in done.printed
    assert "verified checkpoint pnl_ledger: position 6 (= the event's rowid)" in done.printed
    assert fetch(empty_database_url, "SELECT count(*) FROM position_view") == [(2,)]


def test_the_documented_layout3_benchmark_runs(admin_url: str) -> None:
    """The benchmark's command as written, but for its size: what is checked is that it runs
    and prints its row."""
    (block,) = [b for b in shell_blocks(DOC) if "bench.import_layout3" in b]
    script = block.replace("postgresql://postgres@127.0.0.1:5432/test", '"$ADMIN_URL"', 1)
    script = script.replace("--events 1000000 --rounds 2", "--events 2000 --rounds 1")
    (ran,) = run_as_written(script, {**environment_without("PYTEST_*"), "ADMIN_URL": admin_url})
    row = r"^\| 1 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$"
    assert re.search(row, ran.printed, re.M), ran.printed
