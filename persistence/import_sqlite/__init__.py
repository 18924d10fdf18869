"""Move the bot's SQLite store into PostgreSQL exactly, or say precisely what cannot be moved.

The import is all-or-nothing: one transaction stages every row, checks it against what is stored,
inserts, verifies counts and exact sums, and commits. A crash or ``kill -9`` at any point leaves
the target as it was, so running it again gives the same result as an uninterrupted run.

This module is the public API and the driver: it opens the file (``_source``), picks the layout
that claims it, opens the one transaction (``_target``), runs the layout's steps (``_layout``
says what they are) and the ``schwab_auth`` part both layouts share (``_auth``), and builds the
report (``_report``). A layout is one module with the same parts (detect, read, check, write,
verify), converting with ``convert`` (the rules, in its docstring) and verifying with
``_verify``:

- ``layout1``: ``trades`` (the first layout);
- ``layout2`` (and ``layout2_rows``, its read step): the trade-batching tables (the second);
- ``layout3`` (and ``layout3_json``, its JSON rules): the bot's event store (the third, today's).

A new layout is a module ending in ``LAYOUT = Layout(...)`` and one entry in ``LAYOUTS``. The
layouts are tried in order and the first that claims the file is imported: a file with an
``events`` table (aggregate_type, aggregate_id, sequence) is read as the third layout; a file
with both an ``onchain_trades`` and a ``trades`` table as the second, its ``trades`` ignored.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import attrs
import psycopg

from persistence import migrate
from persistence.config import Settings
from persistence.connect import server_url
from persistence.errors import ConfigurationError
from persistence.import_sqlite._auth import has_tokens, insert_auth, read_auth
from persistence.import_sqlite._layout import Layout, Run
from persistence.import_sqlite._report import (
    ImportFailed,
    ImportReport,
    Problem,
    Problems,
    SourceDamaged,
    progress_stream,
)
from persistence.import_sqlite._source import open_source, source_error
from persistence.import_sqlite._target import connect, database_error, migrate_in_transaction
from persistence.import_sqlite.convert import to_datetime, to_decimal
from persistence.import_sqlite.layout1 import BOT_COLUMNS, MONEY_COLUMNS, STAGE
from persistence.import_sqlite.layout1 import LAYOUT as TRADES
from persistence.import_sqlite.layout2 import LAYOUT as BATCHING
from persistence.import_sqlite.layout3 import LAYOUT as EVENT_STORE
from persistence.tokens import NO_KEY, keyring_for

__all__ = [
    "BOT_COLUMNS",
    "LAYOUTS",
    "MONEY_COLUMNS",
    "STAGE",
    "ImportFailed",
    "ImportReport",
    "Problem",
    "SourceDamaged",
    "import_sqlite",
    "progress_stream",
    "to_datetime",
    "to_decimal",
]

logger = logging.getLogger(__name__)

# tried in this order: the first whose detect claims the file is imported
LAYOUTS: tuple[Layout[Any], ...] = (EVENT_STORE, BATCHING, TRADES)


def import_sqlite(
    path: Path | str,
    settings: Settings | None = None,
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
    on_problem: Callable[[Problem], None] | None = None,
    progress: IO[str] | None = None,
    batch_size: int = 20_000,
) -> ImportReport:
    """Import the bot's SQLite file at ``path``; ``convert``'s docstring has every rule.

    ``on_problem`` is called with each invalid row and each noted change. By default one invalid
    row fails the import and nothing is written; ``skip_invalid`` imports the valid rows.
    ``dry_run`` does everything but commit, and leaves an unmigrated target unmigrated.
    """
    started = time.monotonic()
    source_path = Path(path)
    source, tables = open_source(source_path)
    try:
        layout = _detect(source_path, source, tables)
        # a page found damaged while reading (the check at open reads the file's structure, not
        # every value) fails the import the same way, whenever it is met: nothing is written
        try:
            return _import(
                layout,
                source,
                source_path,
                started,
                settings,
                dry_run=dry_run,
                skip_invalid=skip_invalid,
                problems=Problems(on_problem),
                progress=progress,
                batch_size=batch_size,
            )
        except sqlite3.DatabaseError as exc:
            raise source_error(source_path, exc) from None
    finally:
        source.close()


def _detect(path: Path, source: sqlite3.Connection, tables: set[str]) -> Layout[Any]:
    for layout in LAYOUTS:
        if layout.detect(path, source, tables):
            return layout
    raise ImportFailed(
        f"{path} has neither a trades nor an onchain_trades table: is it the bot's database?"
    )


def _import(
    layout: Layout[Any],
    source: sqlite3.Connection,
    source_path: Path,
    started: float,
    settings: Settings | None,
    *,
    dry_run: bool,
    skip_invalid: bool,
    problems: Problems,
    progress: IO[str] | None,
    batch_size: int,
) -> ImportReport:
    logger.info("%s holds the bot's %s layout", source_path, layout.name)
    settings = settings or Settings.from_env()
    # the tokens are sealed on the way in: a missing or bad key fails before anything is done
    # (the development key belongs to the embedded server, so this comes before resolving it)
    tokens = has_tokens(source)
    keyring = keyring_for(settings) if tokens else None
    if tokens and keyring is None:
        raise ConfigurationError(f"the file holds Schwab tokens, to be sealed on import: {NO_KEY}")
    # the server is resolved once (the embedded one starts, and says so, once)
    settings = attrs.evolve(settings, url=server_url(settings))
    if not dry_run:
        migrate.apply(settings)
    conn = connect(settings)
    try:
        with conn.transaction() as tx:
            if dry_run:
                migrate_in_transaction(conn, settings)
            run = Run(source_path, source, conn, problems, skip_invalid, progress, batch_size)
            data = layout.read(run)
            layout.check(run, data)
            auth_read, auth = read_auth(source, problems)
            problems.refuse_invalid(skip_invalid)
            layout.write(run, data)
            verified = layout.verify(run, data)
            auth_inserted = 0 if auth is None else insert_auth(conn, auth, keyring, problems)
            if dry_run:
                raise psycopg.Rollback(tx)
    except psycopg.Error as exc:
        raise database_error(exc) from None
    finally:
        conn.close()
    return ImportReport(
        source=str(source_path),
        dry_run=dry_run,
        auth_read=auth_read,
        auth_inserted=auth_inserted,
        invalid=problems.counts["invalid"],
        notes=problems.counts["note"],
        seconds=time.monotonic() - started,
        verified=verified,
        layout=layout.name,
        **layout.counts(data),
    )
