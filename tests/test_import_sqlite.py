"""Importing the bot's SQLite file: exact conversion, loud refusals, all-or-nothing."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from persistence import Database, Settings
from persistence.import_sqlite import (
    STAGE,
    ImportFailed,
    Problem,
    import_sqlite,
    to_datetime,
    to_decimal,
)
from persistence.models import AMOUNT, IO_RATIO, PRICE_CENTS
from tests import bot_store
from tests.support import environment_without, kill_during_copy, migrated_database

AUTH = {
    "access_token": "SECRET-access",
    "access_token_fetched_at": "2026-03-01 11:00:00",
    "refresh_token": "SECRET-refresh",
    "refresh_token_fetched_at": "2026-02-25T09:30:00Z",
}
EPOCH = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def run(path: Path, url: str, **options: Any) -> tuple[Any, list[Problem]]:
    problems: list[Problem] = []
    result = import_sqlite(path, Settings.from_env(url=url), on_problem=problems.append, **options)
    return result, problems


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = environment_without("DATABASE_URL")
    return subprocess.run(
        [sys.executable, "-m", "persistence.import_sqlite", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def stored(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT * FROM trades ORDER BY id").fetchall()


@pytest.mark.parametrize(
    ("value", "spec", "expected"),
    [
        (0.1 + 0.2, AMOUNT, "0.30000000000000004"),  # the artefact is the double's true value
        (15025.100000000002, PRICE_CENTS, "15025.100000000002"),
        (100 / 3, PRICE_CENTS, "33.333333333333336"),
        (150.25 / 0.37, IO_RATIO, "406.0810810810811"),
        (5, AMOUNT, "5"),
        (5.0, AMOUNT, "5.0"),
        (" 150.25 ", AMOUNT, "150.25"),
        ("1.000000000000000001", AMOUNT, "1.000000000000000001"),
        (1.2345678901234566e-7, IO_RATIO, "1.2345678901234566E-7"),
        # 19 decimals; rounding to 18 stays within one ulp of the double: allowed
        (0.0076465728163336265, AMOUNT, "0.007646572816333626"),
    ],
)
def test_numbers_convert_exactly(value: Any, spec: Any, expected: str) -> None:
    assert to_decimal("c", value, spec) == Decimal(expected)


@pytest.mark.parametrize(
    ("value", "spec", "reason"),
    [
        (1e-20, AMOUNT, "more than 18 decimal places"),
        (0.0014302060167127723, AMOUNT, "one ulp"),
        (float("inf"), AMOUNT, "not finite"),
        (float("nan"), AMOUNT, "not finite"),
        ("abc", AMOUNT, "text that is not a number"),
        ("Infinity", AMOUNT, "not finite"),
        ("1.0000000000000000001", AMOUNT, "more than 18 decimal places"),
        (1e21, AMOUNT, "too large"),
        (b"\x00", AMOUNT, "not a number"),
    ],
)
def test_lossy_or_meaningless_numbers_are_refused(value: Any, spec: Any, reason: str) -> None:
    with pytest.raises(Exception, match=reason):
        to_decimal("c", value, spec)


@pytest.mark.parametrize(
    ("text", "expected", "rounded"),
    [
        ("2026-01-02 03:04:05", EPOCH, False),
        ("2026-01-02T03:04:05", EPOCH, False),
        ("2026-01-02T03:04:05Z", EPOCH, False),
        ("2026-01-02T05:04:05+02:00", EPOCH, False),
        ("2026-01-01T22:04:05-0500", EPOCH, False),
        ("2026-01-02T03:04:05.123456Z", EPOCH.replace(microsecond=123456), False),
        ("2026-01-02T03:04:05.123456789Z", EPOCH.replace(microsecond=123457), True),
        ("2026-01-02T03:04:05.1234565", EPOCH.replace(microsecond=123456), True),  # half-even
        ("2026-01-02T03:04:05.9999996Z", EPOCH.replace(second=6), True),
        (1767323045, EPOCH, False),
        (1767323045.25, EPOCH.replace(microsecond=250000), False),
        (1767323045123, EPOCH.replace(microsecond=123000), False),
        (1767323045123456, EPOCH.replace(microsecond=123456), False),
        ("1767323045", EPOCH, False),
    ],
)
def test_every_timestamp_form(text: Any, expected: datetime, rounded: bool) -> None:
    assert to_datetime("created_at", text) == (expected, rounded)


@pytest.mark.parametrize("text", ["yesterday", "2026-13-40 99:99:99", 2460000.5, b"blob"])
def test_unreadable_timestamps_are_refused(text: Any) -> None:
    with pytest.raises(Exception, match=r"timestamp|Unix time|date"):
        to_datetime("created_at", text)


def test_a_realistic_file_imports_every_digit(tmp_path: Path, empty_database_url: str) -> None:
    rows = [
        bot_store.row(1, onchain_input_amount=0.1 + 0.2, onchain_io_ratio=0.30000000000000004),
        bot_store.row(
            2, onchain_price_per_share_cents=100 / 3, created_at="2026-03-01T12:00:00.5Z"
        ),
        bot_store.row(3, onchain_io_ratio=150.25 / 0.37, tx_hash="0x" + "AB" * 32),
        bot_store.row(7, onchain_output_amount=5, onchain_input_amount="750.5"),
        bot_store.row(
            8,
            status="COMPLETED",
            schwab_order_id="1002003",
            schwab_price_per_share_cents=15025.100000000002,
            created_at=1767323045,
            completed_at="2026-01-02T03:04:05.123456789Z",
        ),
    ]
    path = bot_store.write(tmp_path / "bot.db", rows, AUTH)
    result, problems = run(path, empty_database_url)
    assert (result.trades_read, result.trades_inserted, result.invalid) == (5, 5, 0)
    assert result.auth_inserted == 1
    assert [p.reason for p in problems] == [
        "rounded to the microsecond (PostgreSQL keeps microseconds)"
    ]
    with Database.connect(empty_database_url) as db:
        first = db.trades.get_by_id(1)
        assert first is not None and first.onchain_input_amount == Decimal("0.30000000000000004")
        assert db.trades.get_by_id(2).onchain_price_per_share_cents == Decimal("33.333333333333336")  # type: ignore[union-attr]
        assert db.trades.get_by_id(3).tx_hash == "0x" + "ab" * 32  # type: ignore[union-attr]
        assert db.trades.get_by_id(7).onchain_input_amount == Decimal("750.5")  # type: ignore[union-attr]
        done = db.trades.get_by_id(8)
        assert done is not None and done.created_at == EPOCH
        assert done.completed_at == EPOCH.replace(microsecond=123457)
        assert done.schwab_price_per_share_cents == Decimal("15025.100000000002")
        assert db.schwab_auth.load().refresh_token == "SECRET-refresh"  # type: ignore[union-attr]
        # ids are kept, and new trades get ids past them
        from tests.factories import make_trade

        assert db.trades.insert(make_trade()) == 9
    assert Decimal(result.verified["onchain_input_amount"]) == (
        sum(Decimal(x) for x in ("0.30000000000000004", "150.25", "150.25", "750.5", "150.25"))
    )


def bad_rows() -> list[dict[str, Any]]:
    return [
        bot_store.row(1),
        bot_store.row(2, onchain_input_amount=1e-20),
        bot_store.row(3, onchain_output_amount=float("inf")),
        bot_store.row(4, onchain_io_ratio="abc"),
        bot_store.row(5, tx_hash="0x1234"),
        bot_store.row(6, status=None),
        bot_store.row(7, onchain_price_per_share_cents=1e13),
        bot_store.row(8, created_at="yesterday"),
        bot_store.row(9, status="COMPLETED", completed_at="2026-03-01 12:00:01"),  # no order id
        bot_store.row(10),
    ]


EXPECTED_PROBLEMS = {
    2: ("onchain_input_amount", "more than 18 decimal places"),
    3: ("onchain_output_amount", "not finite"),
    4: ("onchain_io_ratio", "text that is not a number"),
    5: ("tx_hash", "0x followed by 64 hexadecimal digits"),
    6: ("status", "is NULL"),
    7: ("onchain_price_per_share_cents", "too large"),
    8: ("created_at", "not a timestamp"),
    9: ("schwab_order_id", "needs its Schwab order id"),
}


def test_one_invalid_row_fails_the_import_and_writes_nothing(
    tmp_path: Path, emptied_url: str
) -> None:
    path = bot_store.write(tmp_path / "bot.db", bad_rows(), AUTH)
    problems: list[Problem] = []
    with pytest.raises(ImportFailed, match="8 invalid row"):
        import_sqlite(path, Settings.from_env(url=emptied_url), on_problem=problems.append)
    found = {p.sqlite_id: (p.column, p.reason) for p in problems if p.kind == "invalid"}
    assert found.keys() == EXPECTED_PROBLEMS.keys()
    for sqlite_id, (column, reason) in EXPECTED_PROBLEMS.items():
        assert found[sqlite_id][0] == column, sqlite_id
        assert reason in found[sqlite_id][1], sqlite_id
    assert stored(emptied_url) == []
    with psycopg.connect(emptied_url) as conn:
        assert conn.execute("SELECT count(*) FROM schwab_auth").fetchone() == (0,)


def test_skip_invalid_imports_the_valid_rows_and_the_cli_reports(
    tmp_path: Path, emptied_url: str
) -> None:
    path = bot_store.write(tmp_path / "bot.db", bad_rows(), AUTH)
    report = tmp_path / "report.jsonl"
    refused = cli(str(path), "--database-url", emptied_url, "--report", str(report))
    assert refused.returncode == 1
    assert "8 invalid row(s); nothing was imported" in refused.stderr
    assert "onchain_input_amount: has more than 18 decimal places" in refused.stderr
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert {line["sqlite_id"] for line in lines} == set(EXPECTED_PROBLEMS)
    assert "SECRET" not in report.read_text() + refused.stderr + refused.stdout

    done = cli(str(path), "--database-url", emptied_url, "--report", str(report), "--skip-invalid")
    assert done.returncode == 0, done.stderr
    assert "inserted 2 trades (0 already present)" in done.stdout
    assert "rows/s" in done.stdout
    assert [row[0] for row in stored(emptied_url)] == [1, 10]


def test_existing_rows_are_never_overwritten(tmp_path: Path, emptied_url: str) -> None:
    path = bot_store.write(tmp_path / "bot.db", [bot_store.row(i) for i in range(1, 4)])
    run(path, emptied_url)
    with psycopg.connect(emptied_url, autocommit=True) as conn:
        conn.execute("UPDATE trades SET onchain_input_amount = 1 WHERE id = 2")
    bigger = bot_store.write(tmp_path / "bigger.db", [bot_store.row(i) for i in range(1, 6)])
    result, problems = run(bigger, emptied_url)
    assert (result.trades_inserted, result.trades_already_present) == (2, 3)
    assert sum(p.reason.startswith("already stored") for p in problems) == 3
    assert [r[4] for r in stored(emptied_url)][1] == Decimal(1)


def test_dry_run_writes_nothing_not_even_the_schema(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = bot_store.write(tmp_path / "bot.db", bot_store.many(100), AUTH)
    result = cli(
        str(path),
        "--database-url",
        empty_database_url,
        "--dry-run",
        "--report",
        str(tmp_path / "r"),
    )
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing written" in result.stdout
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('trades')").fetchone() == (None,)


def test_a_file_that_is_not_the_bots_is_refused(tmp_path: Path, emptied_url: str) -> None:
    other = tmp_path / "other.db"
    other.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ImportFailed, match="not a SQLite database"):
        run(other, emptied_url)
    older = tmp_path / "older.db"
    conn = sqlite3.connect(older)
    conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, tx_hash TEXT)")
    conn.close()
    with pytest.raises(ImportFailed, match=r"lacks the bot's column.*log_index"):
        run(older, emptied_url)


@pytest.mark.slow
def test_kill_9_mid_import_then_rerun_equals_an_uninterrupted_import(
    tmp_path: Path, admin_url: str, empty_database_url: str
) -> None:
    path = bot_store.write(tmp_path / "bot.db", bot_store.many(20_000), AUTH)
    env = environment_without("DATABASE_URL")
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
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_during_copy(importer, empty_database_url, f'COPY "{STAGE}"%')
    assert importer.returncode == -signal.SIGKILL
    assert stored(empty_database_url) == []
    result, _ = run(path, empty_database_url)
    assert result.trades_inserted == 20_000
    with migrated_database(admin_url, "persistence_reference") as reference:
        run(path, reference)
        assert stored(empty_database_url) == stored(reference)


@pytest.mark.slow
def test_a_million_row_file_imports_whole_and_verified(
    tmp_path: Path, empty_database_url: str
) -> None:
    """Correctness at the bot's scale; the rate is printed (-s), not asserted: timing is for
    bench/, and this machine's load would make a bound flaky."""
    path = bot_store.write(tmp_path / "bot.db", bot_store.many(1_000_000), AUTH)
    result, problems = run(path, empty_database_url)
    assert result.trades_inserted == 1_000_000 and problems == []
    assert "within one ulp" in result.verified["trades"]
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM trades").fetchone() == (1_000_000,)
    print(f"\n1,000,000 rows in {result.seconds:.1f} s ({result.rows_per_second:,.0f} rows/s)")


@pytest.mark.slow
def test_the_application_statement_timeout_does_not_bound_the_import(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = bot_store.write(tmp_path / "bot.db", bot_store.many(20_000))
    # 1 ms would cancel the staging COPY if the application's timeout applied to it
    result = import_sqlite(path, Settings.from_env(url=empty_database_url, statement_timeout=0.001))
    assert result.trades_inserted == 20_000


@pytest.mark.slow
def test_an_import_statement_timeout_is_a_typed_error_and_exit_1(
    tmp_path: Path, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = bot_store.write(tmp_path / "bot.db", bot_store.many(20_000))
    with pytest.raises(ImportFailed, match="PERSISTENCE_IMPORT_STATEMENT_TIMEOUT"):
        import_sqlite(
            path, Settings.from_env(url=empty_database_url, import_statement_timeout=0.001)
        )
    assert stored(empty_database_url) == []
    monkeypatch.setenv("PERSISTENCE_IMPORT_STATEMENT_TIMEOUT", "0.001")
    failed = cli(str(path), "--database-url", empty_database_url, "--report", str(tmp_path / "r"))
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    assert "PERSISTENCE_IMPORT_STATEMENT_TIMEOUT" in failed.stderr
    assert stored(empty_database_url) == []


def test_verification_catches_a_conversion_that_rounds(
    tmp_path: Path, emptied_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check reads the SQLite file again: a converter that loses digits cannot pass it."""
    import persistence.import_sqlite.layout1 as importer

    convert = importer.to_decimal

    def six_places(column: str, value: Any, spec: Any) -> Decimal | None:
        exact = convert(column, value, spec)
        return None if exact is None else exact.quantize(Decimal("0.000001"))

    monkeypatch.setattr(importer, "to_decimal", six_places)
    path = bot_store.write(tmp_path / "bot.db", bot_store.many(50))
    with pytest.raises(ImportFailed, match=r"verification failed: trade id \d+ onchain_io_ratio"):
        import_sqlite(path, Settings.from_env(url=emptied_url))
    assert stored(emptied_url) == []


def test_the_embedded_notice_is_printed_once(tmp_path: Path, scratch_server: Any) -> None:
    """Through the throwaway cluster as the embedded server: no developer data is touched."""
    scratch_server.start()
    path = bot_store.write(tmp_path / "bot.db", [bot_store.row(1)])
    env = environment_without("DATABASE_URL")
    env["PERSISTENCE_EMBEDDED_DIR"] = str(scratch_server.data_dir)
    done = subprocess.run(
        [sys.executable, "-m", "persistence.import_sqlite", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("DATABASE_URL is not set") == 1


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    done = cli(str(tmp_path / "absent.db"), "--report", str(tmp_path / "r"))
    assert done.returncode == 2
    assert "is not a file" in done.stderr and "Traceback" not in done.stderr


def test_keys_equal_once_lower_cased_are_found_first_and_name_both_rows(
    tmp_path: Path, emptied_url: str
) -> None:
    rows = [
        bot_store.row(1, tx_hash="0x" + "ab" * 32),
        bot_store.row(2, tx_hash="0x" + "AB" * 32),
        bot_store.row(3),
    ]
    path = bot_store.write(tmp_path / "bot.db", rows)
    with pytest.raises(ImportFailed, match="2 invalid row"):
        run(path, emptied_url)
    result, problems = run(path, emptied_url, skip_invalid=True)
    assert result.trades_inserted == 1  # neither of the two
    invalid = {p.sqlite_id: p.reason for p in problems if p.kind == "invalid"}
    assert set(invalid) == {1, 2}
    assert "of id 2 once hex is lower-cased" in invalid[1]
    assert "of id 1 once hex is lower-cased" in invalid[2]
    assert [row[0] for row in stored(emptied_url)] == [3]
