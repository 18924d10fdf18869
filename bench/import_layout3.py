"""The layout-3 import against a raw COPY of the same rows (issue 28: at least half its speed).

    python -m bench.import_layout3 [--events 1000000] [--rounds 2]

Builds (once, in a temporary folder) a file in the bot's third layout holding ``--events`` events
interleaved over 1,000 aggregates (``sample3.add_many``), then, each round, in two fresh migrated
databases on the test server (``TEST_DATABASE_URL``, else the embedded one), in alternating order:

- **raw COPY**: the file's events read in rowid order and COPYed into ``events`` (position =
  rowid) as the migration made it, in one transaction, committed: the least any import of these
  rows does, and the issue's yardstick;
- **raw COPY, indexes after**: the same, but as the import writes an empty ``events``: its
  indexes dropped before the COPY and built again after it (``layout3_events.drop_indexes``),
  which costs the server less than inserting into them row by row: the fastest raw load;
- **import**: ``import_sqlite`` of the file, as the CLI runs it: every event checked (JSON, gaps),
  COPYed, verified against the file re-read, committed.

Printed: each round's seconds for the three and the ratios of the import's speed to each
COPY's (COPY's seconds / the import's: 1.0 is as fast as that COPY).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from persistence import Settings
from persistence.import_sqlite import import_sqlite
from persistence.import_sqlite.layout3 import EVENT_COLUMNS
from persistence.import_sqlite.layout3_events import drop_indexes, rebuild_indexes
from persistence.import_sqlite.sample3 import SCHEMA, add_many
from tests.support import admin_url, migrated_database

_COPY = f"COPY events (position, {', '.join(EVENT_COLUMNS)}) FROM STDIN"


def raw_copy(path: Path, url: str, *, indexes_after: bool = False) -> float:
    """Seconds to COPY the file's events, as they are, into ``events`` and commit (with
    ``indexes_after``, the indexes dropped first and built again after the COPY)."""
    started = time.perf_counter()
    source = sqlite3.connect(path)
    try:
        rows: Iterator[Any] = iter(
            source.execute(f"SELECT rowid, {', '.join(EVENT_COLUMNS)} FROM events ORDER BY rowid")
        )
        with psycopg.connect(url) as conn, conn.cursor() as cursor:
            rebuild = drop_indexes(conn) if indexes_after else []
            with cursor.copy(_COPY) as copy:
                for row in rows:
                    copy.write_row(row)
            rebuild_indexes(conn, rebuild)
            conn.commit()
    finally:
        source.close()
    return time.perf_counter() - started


def imported(path: Path, url: str) -> float:
    started = time.perf_counter()
    result = import_sqlite(path, Settings.from_env(url=url))
    assert result.invalid == 0 and "events" in result.verified
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.import_layout3")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    admin = admin_url()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bot.db"
        with sqlite3.connect(path) as conn:
            conn.executescript(SCHEMA)
            add_many(conn, args.events)
        print(f"{args.events:,} events, {path.stat().st_size / 1e6:.0f} MB of SQLite")
        print(
            "| round | raw COPY (s) | raw COPY, indexes after (s) | import, verified (s) "
            "| import / COPY | import / COPY, indexes after |"
        )
        print("|---|---|---|---|---|---|")
        for number in range(1, args.rounds + 1):
            with (
                migrated_database(admin, "bench_l3_copy") as copy_url,
                migrated_database(admin, "bench_l3_after") as after_url,
                migrated_database(admin, "bench_l3_import") as import_url,
            ):
                # each round in another order: none of the three always first
                runs = [
                    ("copy", lambda: raw_copy(path, copy_url)),
                    ("after", lambda: raw_copy(path, after_url, indexes_after=True)),
                    ("import", lambda: imported(path, import_url)),
                ]
                shift = (number - 1) % 3
                seconds = {name: run() for name, run in runs[shift:] + runs[:shift]}
            print(
                f"| {number} | {seconds['copy']:.1f} | {seconds['after']:.1f} | "
                f"{seconds['import']:.1f} | {seconds['copy'] / seconds['import']:.2f} | "
                f"{seconds['after'] / seconds['import']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
