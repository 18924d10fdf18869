"""A damaged SQLite file (corrupt pages): a one-line error naming it, exit 1, nothing written.

The damage is found by SQLite's own structure check before anything touches PostgreSQL, and any
damage met later while reading or verifying fails the import the same way.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from persistence import Settings
from persistence.errors import PersistenceError
from persistence.import_sqlite import ImportFailed, Problem, SourceDamaged, import_sqlite
from tests import bot_store
from tests.support import environment_without

ROWS = 3000


def page_size(path: Path) -> int:
    size = int.from_bytes(path.read_bytes()[16:18], "big")
    return 65536 if size == 1 else size


def corrupt_pages(path: Path, first: float = 0.3, last: float = 0.7) -> None:
    """Overwrite the b-tree header of every page from ``first`` to ``last`` of the file (page 1,
    the schema, stays intact, so the file still opens)."""
    size = page_size(path)
    pages = path.stat().st_size // size
    with path.open("r+b") as file:
        for page in range(max(2, int(pages * first)), int(pages * last) + 1):
            file.seek((page - 1) * size)
            file.write(b"\xff" * 12)


def stored_counts(url: str) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM trades), (SELECT count(*) FROM onchain_trades), "
            "(SELECT count(*) FROM schwab_auth)"
        ).fetchone()
    assert row is not None
    return row


def first_layout(folder: Path) -> Path:
    return bot_store.write(folder / "bot.db", bot_store.many(ROWS))


def second_layout(folder: Path) -> Path:
    steps = [
        ("fill", f"0x{index:064x}", 0, "AAPL", 0.25, "BUY", 150.25) for index in range(1, ROWS)
    ]
    return bot_store.write_batching(folder / "bot.db", steps)


@pytest.mark.parametrize("make", [first_layout, second_layout], ids=["first", "second"])
def test_a_damaged_file_is_refused_and_nothing_is_written(
    tmp_path: Path, emptied_url: str, make: Any
) -> None:
    path = make(tmp_path)
    corrupt_pages(path)
    with pytest.raises(SourceDamaged) as caught:
        import_sqlite(path, Settings.from_env(url=emptied_url))
    assert isinstance(caught.value, ImportFailed | PersistenceError)
    message = str(caught.value)
    assert f"{path} is damaged: database disk image is malformed" in message
    assert ".recover" in message and "nothing was imported" in message
    assert stored_counts(emptied_url) == (0, 0, 0)


def test_the_cli_prints_one_line_and_exits_1(tmp_path: Path, emptied_url: str) -> None:
    path = first_layout(tmp_path)
    corrupt_pages(path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "persistence.import_sqlite",
            str(path),
            "--database-url",
            emptied_url,
            "--report",
            str(tmp_path / "report.jsonl"),
        ],
        capture_output=True,
        text=True,
        env=environment_without("DATABASE_URL"),
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path} is damaged: database disk image is malformed")
    assert f"sqlite3 {path} .recover" in line
    assert stored_counts(emptied_url) == (0, 0, 0)


def test_damage_met_while_reading_fails_the_same_way(tmp_path: Path, emptied_url: str) -> None:
    """The file is damaged after the check at open, while its rows are being read: the import
    fails with SourceDamaged, and its transaction, half staged, is rolled back."""
    rows = list(bot_store.many(ROWS))
    # the first row's timestamp has nanoseconds: rounding it is noted, in the middle of the read
    rows[0]["created_at"] = "2026-03-01 12:00:00.123456789"
    path = bot_store.write(tmp_path / "bot.db", rows)
    damaged: list[Problem] = []

    def damage_once(problem: Problem) -> None:
        if not damaged:
            damaged.append(problem)
            corrupt_pages(path, 0.5, 0.95)  # pages not read yet

    with pytest.raises(SourceDamaged, match="database disk image is malformed"):
        import_sqlite(
            path, Settings.from_env(url=emptied_url), on_problem=damage_once, batch_size=50
        )
    assert damaged and damaged[0].kind == "note"
    assert stored_counts(emptied_url) == (0, 0, 0)


def test_an_intact_file_still_imports(tmp_path: Path, emptied_url: str) -> None:
    """The check at open passes an intact file (the damaged tests fail for the damage only)."""
    report = import_sqlite(first_layout(tmp_path), Settings.from_env(url=emptied_url))
    assert report.trades_inserted == ROWS
    assert stored_counts(emptied_url) == (ROWS, 0, 0)


def test_a_damaged_file_is_refused_before_the_target_is_migrated(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = first_layout(tmp_path)
    corrupt_pages(path)
    with pytest.raises(SourceDamaged):
        import_sqlite(path, Settings.from_env(url=empty_database_url))
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('trades')").fetchone() == (None,)
