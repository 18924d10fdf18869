"""Move the bot's SQLite store into PostgreSQL exactly, or say precisely what cannot be moved.

The import is all-or-nothing: one transaction stages every row, checks it against what is stored,
inserts, verifies counts and exact sums, and commits. A crash or ``kill -9`` at any point leaves
the target as it was, so running it again gives the same result as an uninterrupted run.

Conversion rules (docs/migrating-from-sqlite.md):

- A REAL is a double. Its value is the shortest decimal that reads back as the same double
  (``repr``). If that has more decimal places than the column keeps, it is rounded half-even to
  the column's scale, and kept only if the rounded value is within one ulp of the double's exact
  binary value (its own resolution); otherwise the row is reported (a loss). Integers, and
  numbers stored as text that parse, are exact. Text that is not a number, Infinity and NaN are
  reported.
- Timestamps: ``YYYY-MM-DD HH:MM:SS`` and ISO 8601 with ``T``, fractions up to nanoseconds, ``Z``
  or an offset; no offset means UTC. Digits below the microsecond are rounded to the nearest
  microsecond (as PostgreSQL itself does) and each such row is noted in the report. Unix epoch
  numbers are read by magnitude: seconds, milliseconds, microseconds or nanoseconds.
- Every row is then built as a :class:`~persistence.Trade` (or SchwabAuth): the library's own
  validation. Ids are kept and the identity sequence is moved past them. Rows whose
  (tx_hash, log_index) is already stored are left untouched and reported as present.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import attrs
import psycopg

from persistence import migrate, queries
from persistence._translate import translate
from persistence.config import Settings
from persistence.connect import build_conninfo, open_connection, server_url
from persistence.converter import trade_copy_row
from persistence.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    PersistenceError,
    ValidationError,
)
from persistence.import_sqlite.batching import TABLES as BATCHING_TABLES
from persistence.import_sqlite.batching import import_batching, is_batching
from persistence.import_sqlite.convert import (
    _EXACT,
    ImportFailed,
    SourceDamaged,
    _read_only,
    _RowError,
    _shown,
    _validation_column,
    source_error,
    to_datetime,
    to_decimal,
)
from persistence.models import AMOUNT, IO_RATIO, PRICE_CENTS, NumericSpec, SchwabAuth, Trade
from persistence.operations import auth as auth_ops
from persistence.runners import run_on
from persistence.tables import TRADE_COLUMNS
from persistence.tokens import NO_KEY, Keyring, keyring_for

__all__ = ["ImportFailed", "ImportReport", "Problem", "SourceDamaged", "import_sqlite"]

logger = logging.getLogger(__name__)

MONEY_COLUMNS: dict[str, NumericSpec] = {
    "onchain_input_amount": AMOUNT,
    "onchain_output_amount": AMOUNT,
    "onchain_io_ratio": IO_RATIO,
    "onchain_price_per_share_cents": PRICE_CENTS,
    "schwab_price_per_share_cents": PRICE_CENTS,
}
TIME_COLUMNS = ("created_at", "completed_at")
# the bot's SQLite layout; model fields added later keep their defaults
BOT_COLUMNS = (
    "id",
    "tx_hash",
    "log_index",
    "onchain_input_symbol",
    "onchain_input_amount",
    "onchain_output_symbol",
    "onchain_output_amount",
    "onchain_io_ratio",
    "onchain_price_per_share_cents",
    "schwab_ticker",
    "schwab_instruction",
    "schwab_quantity",
    "schwab_price_per_share_cents",
    "status",
    "schwab_order_id",
    "created_at",
    "completed_at",
)
STAGE = queries.TRADES_STAGE  # the bulk insert's staging table: trades' types, no constraints


@attrs.frozen
class Problem:
    """A value that cannot be moved as it is, or (kind "note") one moved with a noted change."""

    table: str
    sqlite_id: Any
    column: str
    value: str
    reason: str
    kind: str = "invalid"


@attrs.frozen
class ImportReport:
    """What an import read, moved, skipped and verified.

    ``layout`` is "trades" (the first SQLite layout: the ``trades_*`` counts) or "batching"
    (the second: ``tables`` maps each table to rows read, invalid and inserted).
    """

    source: str
    dry_run: bool
    trades_read: int
    trades_valid: int
    trades_inserted: int
    trades_already_present: int
    auth_read: int
    auth_inserted: int
    invalid: int
    notes: int
    seconds: float
    verified: dict[str, str]
    layout: str = "trades"
    tables: dict[str, tuple[int, int, int]] = attrs.field(factory=dict)

    @property
    def rows_read(self) -> int:
        return self.trades_read + sum(read for read, _, _ in self.tables.values())

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def _trade_from_sqlite(row: sqlite3.Row, note: Callable[[str, Any, str], None]) -> Trade:
    fields: dict[str, Any] = {}
    for column in BOT_COLUMNS:
        value = row[column]
        if column in MONEY_COLUMNS:
            fields[column] = to_decimal(column, value, MONEY_COLUMNS[column])
        elif column in TIME_COLUMNS:
            fields[column], rounded = to_datetime(column, value)
            if rounded:
                note(column, value, "rounded to the microsecond (PostgreSQL keeps microseconds)")
        elif value is None and column not in ("schwab_order_id", "id"):
            raise _RowError(column, value, "is NULL, and the column requires a value")
        else:
            fields[column] = value
    if fields["created_at"] is None:
        raise _RowError("created_at", None, "is NULL, and the column requires a value")
    try:
        return Trade(**fields)
    except ValidationError as error:
        column = _validation_column(error, "row")
        value = row[column] if column in BOT_COLUMNS else None
        raise _RowError(column, value, str(error)) from None


def _auth_from_sqlite(row: sqlite3.Row) -> SchwabAuth:
    fields: dict[str, Any] = {}
    for column in ("access_token", "refresh_token"):
        fields[column] = row[column]
    for column in ("access_token_fetched_at", "refresh_token_fetched_at"):
        fields[column], _ = to_datetime(column, row[column])
    try:
        return SchwabAuth(**fields)
    except ValidationError as error:
        column = _validation_column(error, "row")
        raise _RowError(column, None, str(error).split(":", 1)[-1].strip()) from None


def _open_source(path: Path) -> tuple[sqlite3.Connection, str]:
    """The file, read-only, and its layout: "trades" (the first) or "batching" (the second)."""
    if not path.is_file():
        raise ImportFailed(f"{path} is not a file")
    try:
        conn = _read_only(path)
        conn.row_factory = sqlite3.Row
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise ImportFailed(f"{path} is not a SQLite database the import can read: {exc}") from None
    try:
        _check_intact(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise source_error(path, exc) from None
    if is_batching(names):
        missing = [t for t in BATCHING_TABLES[:4] if t not in names]
        if missing:
            raise ImportFailed(
                f"{path} has onchain_trades but not {', '.join(missing)}: not the bot's "
                "trade-batching layout"
            )
        return conn, "batching"
    if "trades" not in names:
        raise ImportFailed(
            f"{path} has neither a trades nor an onchain_trades table: is it the bot's database?"
        )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(trades)")}
    missing = [c for c in BOT_COLUMNS if c not in columns]
    if missing:
        raise ImportFailed(
            f"{path}: the trades table lacks the bot's column(s) {', '.join(missing)}"
        )
    return conn, "trades"


def _check_intact(conn: sqlite3.Connection) -> None:
    """Raise sqlite3.DatabaseError (SQLITE_CORRUPT) unless SQLite finds every page intact.

    ``quick_check`` walks each table's and index's pages (about a second for a million rows), so
    a damaged file is refused before anything, even a migration, touches PostgreSQL.
    """
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        found = " ".join(" ".join(problems).split())  # on one line
        error = sqlite3.DatabaseError(f"database disk image is malformed ({found[:200]})")
        error.sqlite_errorcode = 11  # SQLITE_CORRUPT, as SQLite itself reports it
        raise error


_STAGE_COLUMNS = queries.quoted(TRADE_COLUMNS)


class _Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, total: int, stream: IO[str] | None) -> None:
        self.total, self.stream, self.started, self.shown = total, stream, time.monotonic(), 0.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if self.stream is None or (not final and now - self.shown < 0.2):
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        share = done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        self.stream.write(f"\r[{bar:<30}] {done:,}/{self.total:,} rows, {rate:,.0f} rows/s")
        if final:
            self.stream.write("\n")
        self.stream.flush()


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
    """Import the bot's SQLite file at ``path``; the module docstring has every rule.

    ``on_problem`` is called with each invalid row and each noted change. By default one invalid
    row fails the import and nothing is written; ``skip_invalid`` imports the valid rows.
    ``dry_run`` does everything but commit, and leaves an unmigrated target unmigrated.
    """
    started = time.monotonic()
    source_path = Path(path)
    source, layout = _open_source(source_path)
    # a page found damaged while reading (the check at open reads the file's structure, not
    # every value) fails the import the same way, whenever it is met: nothing is written
    try:
        return _import(
            source,
            source_path,
            layout,
            started,
            settings,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            on_problem=on_problem,
            progress=progress,
            batch_size=batch_size,
        )
    except sqlite3.DatabaseError as exc:
        raise source_error(source_path, exc) from None
    finally:
        source.close()


def _import(
    source: sqlite3.Connection,
    source_path: Path,
    layout: str,
    started: float,
    settings: Settings | None,
    *,
    dry_run: bool,
    skip_invalid: bool,
    on_problem: Callable[[Problem], None] | None,
    progress: IO[str] | None,
    batch_size: int,
) -> ImportReport:
    logger.info("%s holds the bot's %s layout", source_path, layout)
    settings = settings or Settings.from_env()
    # the tokens are sealed on the way in: a missing or bad key fails before anything is done
    # (the development key belongs to the embedded server, so this comes before resolving it)
    has_tokens = _has_tokens(source)
    keyring = keyring_for(settings) if has_tokens else None
    if has_tokens and keyring is None:
        raise ConfigurationError(f"the file holds Schwab tokens, to be sealed on import: {NO_KEY}")
    # the server is resolved once (the embedded one starts, and says so, once)
    settings = attrs.evolve(settings, url=server_url(settings))
    if not dry_run:
        migrate.apply(settings)
    counts = {"invalid": 0, "note": 0}

    def record(problem: Problem) -> None:
        counts[problem.kind] += 1
        if on_problem is not None:
            on_problem(problem)

    def note(table: str, row_id: Any, column: str, value: str, reason: str, kind: str) -> None:
        record(Problem(table, row_id, column, value, reason, kind))

    read = valid = inserted = present = 0
    tables: dict[str, tuple[int, int, int]] = {}
    conn = open_connection(
        build_conninfo(
            settings,
            server_url(settings),
            statement_timeout=settings.import_statement_timeout,
            # the import's one transaction converts and verifies rows in Python between its
            # statements (minutes for a large file), idle in transaction all the while; the bot
            # is stopped meanwhile, and a crash rolls everything back
            idle_in_transaction_timeout=0,
        )
    )
    try:
        with conn.transaction() as tx:
            if dry_run:
                _migrate_in_transaction(conn, settings)
            verified: dict[str, str]
            if layout == "batching":
                read_by, invalid_by, inserted_by, verified = import_batching(
                    conn, source, source_path, note, skip_invalid=skip_invalid
                )
                tables = {t: (read_by[t], invalid_by[t], inserted_by[t]) for t in read_by}
            else:
                total = source.execute("SELECT count(*) FROM trades").fetchone()[0]
                conn.execute(queries.CREATE_TRADES_STAGE)
                bar = _Progress(total, progress)
                read, valid, sums = _stage_trades(conn, source, record, bar, batch_size)
            auth_rows, auth = _read_auth(source, record)
            if counts["invalid"] and not skip_invalid:
                raise ImportFailed(
                    f"{counts['invalid']} invalid row(s); nothing was imported. The report lists "
                    "each row's SQLite id, column, value and reason: fix them in a copy of the "
                    "file, or run again with --skip-invalid to import the valid rows only"
                )
            if layout == "trades":
                _verify_stage(conn, valid, sums)
                present, inserted = _insert(conn, valid, record)
                stored_sums = _verify_against_source(conn, source_path, inserted)
                verified = {
                    "trades": f"{inserted} rows inserted; each stored amount read back within "
                    "one ulp of the SQLite file's double, re-read independently; sums agree"
                }
                verified.update({column: str(amount) for column, amount in stored_sums.items()})
            auth_inserted = 0 if auth is None else _insert_auth(conn, auth, keyring, record)
            if dry_run:
                raise psycopg.Rollback(tx)
    except psycopg.Error as exc:
        raise _database_error(exc) from None
    finally:
        conn.close()
        source.close()
    return ImportReport(
        source=str(source_path),
        dry_run=dry_run,
        trades_read=read,
        trades_valid=valid,
        trades_inserted=inserted,
        trades_already_present=present,
        auth_read=auth_rows,
        auth_inserted=auth_inserted,
        invalid=counts["invalid"],
        notes=counts["note"],
        seconds=time.monotonic() - started,
        verified=verified,
        layout=layout,
        tables=tables,
    )


def _has_tokens(source: sqlite3.Connection) -> bool:
    try:
        return bool(source.execute("SELECT count(*) FROM schwab_auth").fetchone()[0])
    except sqlite3.OperationalError:
        return False  # a file from before the bot kept tokens


def _migrate_in_transaction(conn: psycopg.Connection[Any], settings: Settings) -> None:
    """A dry run leaves the target's schema as it is: the pending migrations run inside the
    import's transaction only, and are rolled back with it."""
    migrations = migrate.load_migrations(settings.migrations_dir)
    for migration in migrate.plan_up(migrations, migrate.read_history(conn)):
        if not migration.no_transaction:
            conn.execute(migration.sql)


def _database_error(exc: psycopg.Error) -> PersistenceError:
    """Our error for a failure of the import's transaction; nothing was written."""
    error = translate(exc)
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return ImportFailed(
            f"the database cancelled a statement of the import: {error}. Nothing was imported; "
            "PERSISTENCE_IMPORT_STATEMENT_TIMEOUT bounds the import's statements (0, the "
            "default, leaves them unbounded)"
        )
    if isinstance(error, DatabaseUnavailable):
        return error
    return ImportFailed(f"the database refused the import: {error}; nothing was imported")


def _stage_trades(
    conn: psycopg.Connection[Any],
    source: sqlite3.Connection,
    record: Callable[[Problem], None],
    bar: _Progress,
    batch_size: int,
) -> tuple[int, int, dict[str, Decimal]]:
    """COPY every valid trade into the staging table; returns rows read, valid, and exact sums."""
    sums = dict.fromkeys(MONEY_COLUMNS, Decimal(0))
    read = valid = 0
    clashing = _same_key_once_lower_cased(source)
    rows = source.execute("SELECT * FROM trades ORDER BY id")
    with conn.cursor() as cursor, cursor.copy(queries.COPY_TRADES_STAGE) as copy:
        while batch := rows.fetchmany(batch_size):
            for row in batch:
                read += 1
                sqlite_id = row["id"]

                def note(column: str, value: Any, reason: str, at: Any = sqlite_id) -> None:
                    record(Problem("trades", at, column, _shown(column, value), reason, "note"))

                if sqlite_id in clashing:
                    others = ", ".join(map(str, clashing[sqlite_id]))
                    reason = (
                        f"has the (tx_hash, log_index) of id {others} once hex is lower-cased: "
                        "one event stored twice; neither row is imported"
                    )
                    record(
                        Problem(
                            "trades",
                            sqlite_id,
                            "tx_hash",
                            _shown("tx_hash", row["tx_hash"]),
                            reason,
                        )
                    )
                    continue
                try:
                    trade = _trade_from_sqlite(row, note)
                except _RowError as error:
                    shown = _shown(error.column, error.value)
                    record(Problem("trades", sqlite_id, error.column, shown, error.reason))
                    continue
                valid += 1
                for column in MONEY_COLUMNS:
                    amount = getattr(trade, column)
                    if amount is not None:
                        sums[column] = _EXACT.add(sums[column], amount)
                copy.write_row(trade_copy_row(trade))
            bar.update(read)
    bar.update(read, final=True)
    return read, valid, sums


def _same_key_once_lower_cased(source: sqlite3.Connection) -> dict[int, list[int]]:
    """The rows whose (tx_hash, log_index) is another row's once hex is lower-cased (SQLite's
    UNIQUE saw two keys): each id with the ids it clashes with, found before anything is
    staged."""
    clashing: dict[int, list[int]] = {}
    for (ids,) in source.execute(
        "SELECT group_concat(id) FROM trades GROUP BY lower(tx_hash), log_index HAVING count(*) > 1"
    ):
        group = [int(i) for i in str(ids).split(",")]
        for sqlite_id in group:
            clashing[sqlite_id] = [other for other in group if other != sqlite_id]
    return clashing


def _read_auth(
    source: sqlite3.Connection, record: Callable[[Problem], None]
) -> tuple[int, SchwabAuth | None]:
    try:
        rows = source.execute("SELECT * FROM schwab_auth").fetchall()
    except sqlite3.OperationalError:
        return 0, None  # a file from before the bot kept tokens
    chosen = None
    for row in rows:
        try:
            chosen = _auth_from_sqlite(row)
        except _RowError as error:
            record(Problem("schwab_auth", row["id"], error.column, "(not shown)", error.reason))
    return len(rows), chosen


def _sums(conn: psycopg.Connection[Any], query: str) -> tuple[Any, ...]:
    row = conn.execute(query).fetchone()
    assert row is not None
    return tuple(Decimal(0) if value is None else value for value in row)


_STAGE_SUMS = f'SELECT count(*), {", ".join(f"sum({c})" for c in MONEY_COLUMNS)} FROM "{STAGE}"'
_STORED_SUMS = (
    f"SELECT count(*), {', '.join(f'sum(t.{c})' for c in MONEY_COLUMNS)} "
    f'FROM trades t JOIN "{STAGE}" s ON s.id = t.id'
)


def _verify_stage(conn: psycopg.Connection[Any], valid: int, sums: dict[str, Decimal]) -> None:
    staged = _sums(conn, _STAGE_SUMS)
    if staged != (valid, *sums.values()):
        raise ImportFailed(
            f"verification failed: the staged rows' count or sums differ from the source "
            f"({staged[0]} rows for {valid}); nothing was imported"
        )


def _insert(
    conn: psycopg.Connection[Any], valid: int, record: Callable[[Problem], None]
) -> tuple[int, int]:
    """Insert the staged trades that are not stored yet; returns (already present, inserted)."""
    duplicates = conn.execute(
        "SELECT id, log_index FROM (SELECT id, log_index, row_number() OVER "
        f'(PARTITION BY tx_hash, log_index ORDER BY id) AS n FROM "{STAGE}") d WHERE n > 1'
    ).fetchall()
    for sqlite_id, log_index in duplicates:
        reason = (
            f"repeats the (tx_hash, log_index {log_index}) of an earlier row "
            "once hex is lower-cased"
        )
        record(Problem("trades", sqlite_id, "tx_hash", "", reason))
    clashes = conn.execute(
        f'SELECT s.id FROM "{STAGE}" s JOIN trades t ON t.id = s.id '
        "WHERE (t.tx_hash, t.log_index) <> (s.tx_hash, s.log_index)"
    ).fetchall()
    for (sqlite_id,) in clashes:
        record(
            Problem(
                "trades", sqlite_id, "id", repr(sqlite_id), "is used by another trade in PostgreSQL"
            )
        )
    if duplicates or clashes:
        raise ImportFailed(
            f"{len(duplicates)} duplicate key(s) and {len(clashes)} id clash(es); "
            "nothing was imported"
        )
    present = conn.execute(
        f'DELETE FROM "{STAGE}" s USING trades t '
        "WHERE t.tx_hash = s.tx_hash AND t.log_index = s.log_index RETURNING s.id"
    ).fetchall()
    for (sqlite_id,) in present:
        record(Problem("trades", sqlite_id, "tx_hash", "", "already stored: kept as it is", "note"))
    # with the bot stopped nothing races this; if something does, the unique key fails the import
    inserted = conn.execute(
        f'INSERT INTO trades ({_STAGE_COLUMNS}) SELECT {_STAGE_COLUMNS} FROM "{STAGE}"'
    ).rowcount
    conn.execute(queries.ADVANCE_TRADE_ID)
    if _sums(conn, _STORED_SUMS) != _sums(conn, _STAGE_SUMS) or inserted + len(present) != valid:
        raise ImportFailed("verification failed after the insert; nothing was imported")
    return len(present), inserted


_STORED_AMOUNTS = (
    f"SELECT t.id, {', '.join(f't.{c}' for c in MONEY_COLUMNS)} "
    f'FROM trades t JOIN "{STAGE}" s ON s.id = t.id ORDER BY t.id'
)


def _verify_against_source(
    conn: psycopg.Connection[Any], source_path: Path, inserted: int
) -> dict[str, Decimal]:
    """Compare every inserted amount with the SQLite file, read again without the conversion.

    The file is opened anew and its raw values compared with what PostgreSQL now holds: a
    double must be within one ulp of its exact binary value (the conversion rule), any other
    number exactly equal. Sums are taken from the source's exact values and must agree within
    the sum of those ulps. Returns the stored sums.
    """
    source = _read_only(source_path)
    columns = tuple(MONEY_COLUMNS)
    stored_sums = dict.fromkeys(columns, Decimal(0))
    source_sums = dict.fromkeys(columns, Decimal(0))
    slack = dict.fromkeys(columns, 0.0)  # a tolerance: the sum of the values' ulps
    compared = 0
    try:
        raw = source.execute(f"SELECT id, {', '.join(columns)} FROM trades ORDER BY id")
        with conn.cursor(name="persistence_import_verify") as cursor:
            cursor.itersize = 10_000
            cursor.execute(_STORED_AMOUNTS)
            for stored in cursor:
                row = next(raw, None)
                while row is not None and row[0] != stored[0]:
                    row = next(raw, None)  # invalid or already present: not inserted
                if row is None:
                    raise ImportFailed(
                        f"verification failed: stored trade id {stored[0]} has no row in the "
                        "source; nothing was imported"
                    )
                for column, value, amount in zip(columns, row[1:], stored[1:], strict=True):
                    if (value is None) != (amount is None):
                        raise _mismatch(stored[0], column, value, amount)
                    if value is None:
                        continue
                    exact = Decimal(value)  # a double exactly, or the integer or text as stored
                    if isinstance(value, float):
                        ulp = math.ulp(value)
                        slack[column] += ulp
                        # most values read back as the same double: no exact arithmetic needed
                        if float(amount) != value and abs(_EXACT.subtract(amount, exact)) > Decimal(
                            ulp
                        ):
                            raise _mismatch(stored[0], column, value, amount)
                    elif amount != exact:
                        raise _mismatch(stored[0], column, value, amount)
                    stored_sums[column] = _EXACT.add(stored_sums[column], amount)
                    source_sums[column] = _EXACT.add(source_sums[column], exact)
                compared += 1
    finally:
        source.close()
    if compared != inserted:
        raise ImportFailed(
            f"verification failed: {compared} stored rows for {inserted} inserted; "
            "nothing was imported"
        )
    for column in columns:
        if abs(_EXACT.subtract(stored_sums[column], source_sums[column])) > Decimal(
            slack[column] * 1.01
        ):
            raise ImportFailed(
                f"verification failed: the sum of {column} is {stored_sums[column]} in "
                f"PostgreSQL and {source_sums[column]} in the source; nothing was imported"
            )
    return stored_sums


def _mismatch(trade_id: Any, column: str, value: Any, amount: Any) -> ImportFailed:
    return ImportFailed(
        f"verification failed: trade id {trade_id} {column} is {value!r} in the source and "
        f"{amount} in PostgreSQL, more than the double's resolution apart; nothing was imported"
    )


def _insert_auth(
    conn: psycopg.Connection[Any],
    auth: SchwabAuth,
    keyring: Keyring | None,
    record: Callable[[Problem], None],
) -> int:
    """Store the tokens sealed (persistence.tokens), unless tokens are stored already."""
    inserted: int = run_on(conn, auth_ops.insert_if_absent(keyring, auth))
    if not inserted:
        record(
            Problem(
                "schwab_auth",
                1,
                "access_token",
                "(not shown)",
                "tokens already stored: kept",
                "note",
            )
        )
    return inserted


def progress_stream() -> IO[str] | None:
    """stderr when it is a terminal, else None (quiet in logs and CI)."""
    return sys.stderr if sys.stderr.isatty() else None
