"""``python -m persistence.import_sqlite PATH``: parse arguments, import, print the outcome.

``--make-sample FILE [--layout 1|2|3]`` writes a small store in one of the bot's layouts
(``sample1``, ``sample2``, ``sample3``) instead, to try the import without the bot.

Exit codes: 0 imported (or, with --dry-run, would import), 1 invalid rows, a damaged file or a
failed verification (nothing was written), 2 bad usage or configuration (the path is not a file,
not SQLite, or not the bot's database), 5 the database is unavailable, 6 the server refused the
credentials.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

from persistence._cli import (
    AUTHENTICATION,
    FAILED,
    OK,
    UNAVAILABLE,
    USAGE,
    configure_logging,
    failed,
)
from persistence.config import Settings
from persistence.errors import PersistenceError
from persistence.import_sqlite import (
    LAYOUTS,
    Problem,
    import_sqlite,
    progress_stream,
    sample1,
    sample2,
    sample3,
)

SQLITE_HEADER = b"SQLite format 3\x00"
EXIT_CODES = (OK, FAILED, USAGE, UNAVAILABLE, AUTHENTICATION)

SHOWN = 10
SAMPLES = {1: sample1.make_sample, 2: sample2.make_sample, 3: sample3.make_sample}


def main(argv: list[str] | None = None) -> int:
    configure_logging(logging.WARNING)
    parser = argparse.ArgumentParser(
        prog="python -m persistence.import_sqlite",
        description="Copy the bot's SQLite database into PostgreSQL, exactly, in one transaction.",
        epilog="exit codes: 0 done, 1 invalid rows, a damaged file or failed verification "
        "(nothing written), 2 usage or configuration (not a file, not SQLite, not the bot's), "
        "5 database unavailable, 6 credentials refused",
    )
    parser.add_argument(
        "path", type=Path, nargs="?", help="the bot's SQLite file (opened read-only)"
    )
    parser.add_argument(
        "--make-sample",
        type=Path,
        metavar="FILE",
        help="write a small store in one of the bot's layouts to FILE (a new file), and exit",
    )
    parser.add_argument(
        "--layout",
        type=int,
        choices=(1, 2, 3),
        default=3,
        help="the layout --make-sample writes (default 3, the bot's event store)",
    )
    parser.add_argument("--database-url", help="default: DATABASE_URL, else the embedded server")
    parser.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("import-report.jsonl"),
        help="JSON lines, one per invalid row or noted change (default: import-report.jsonl)",
    )
    parser.add_argument("--skip-invalid", action="store_true", help="import the valid rows only")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress on stderr (default: redrawn on a terminal, else a line per phase)",
    )
    args = parser.parse_args(argv)
    if args.make_sample is not None:
        if args.path is not None:
            parser.error("give either PATH (to import) or --make-sample FILE, not both")
        if args.make_sample.exists():
            parser.error(f"{args.make_sample} exists: --make-sample writes a new file")
        SAMPLES[args.layout](args.make_sample)
        print(f"wrote the bot's layout {args.layout} to {args.make_sample}: import it with")
        print(f"  python -m persistence.import_sqlite {args.make_sample}")
        return 0
    if args.path is None:
        parser.error("give the path of the bot's SQLite file (or --make-sample FILE)")
    if not args.path.is_file():
        parser.error(f"{args.path} is not a file: give the path of the bot's SQLite database")
    wrong = _not_the_bots(args.path)
    if wrong:
        parser.error(wrong)

    overrides: dict[str, Any] = {"url": args.database_url} if args.database_url else {}
    tally: Counter[tuple[str, str, str]] = Counter()
    first: list[Problem] = []
    with args.report.open("w") as report:

        def on_problem(problem: Problem) -> None:
            report.write(json.dumps(attrs.asdict(problem)) + "\n")
            tally[(problem.kind, problem.column, problem.reason)] += 1
            if problem.kind == "invalid" and len(first) < SHOWN:
                first.append(problem)

        try:
            result = import_sqlite(
                args.path,
                Settings.from_env(**overrides),
                dry_run=args.dry_run,
                skip_invalid=args.skip_invalid,
                on_problem=on_problem,
                progress=progress_stream(quiet=args.quiet),
            )
        except PersistenceError as exc:
            _summarise(tally, first, args.report)
            return failed(exc)
    _summarise(tally, first, args.report)
    verb = "would insert" if result.dry_run else "inserted"
    if result.layout in ("batching", "event store"):
        if result.layout == "batching":
            print(f"{args.path} holds the bot's second layout (trade batching)")
        else:
            print(f"{args.path} holds the bot's third layout (the event store)")
        for table, (read, invalid, inserted) in result.tables.items():
            print(f"{table}: read {read:,}, {invalid:,} invalid, {verb} {inserted:,}")
        print(f"schwab_auth: {result.auth_inserted} of {result.auth_read} row(s) {verb}")
    else:
        print(f"{args.path} holds the bot's first layout (trades)")
        print(
            f"read {result.trades_read:,} trades: {result.trades_valid:,} valid, "
            f"{result.invalid:,} invalid, {result.notes:,} noted"
        )
        print(
            f"{verb} {result.trades_inserted:,} trades ({result.trades_already_present:,} "
            f"already present); schwab_auth: {result.auth_inserted} of {result.auth_read} "
            f"row(s) {verb}"
        )
    for name, value in result.verified.items():
        print(f"verified {name}: {value}")
    note = "; dry run: nothing written" if result.dry_run else ""
    print(
        f"{result.rows_read:,} rows in {result.seconds:.1f} s "
        f"({result.rows_per_second:,.0f} rows/s){note}"
    )
    return 0


def _not_the_bots(path: Path) -> str | None:
    """Why ``path`` is not a file to give this command (a usage error), or None.

    A file that is SQLite but damaged is left to the import: that is exit 1, nothing written.
    """
    with path.open("rb") as file:
        if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            return f"{path} is not a SQLite database: give the path of the bot's SQLite file"
    try:
        source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        tables = {r[0] for r in source.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not any(layout.detect(path, source, tables) for layout in LAYOUTS):
            return f"{path} holds none of the bot's layouts' tables: is it the bot's database?"
    except sqlite3.Error:
        return None
    except PersistenceError as exc:  # it looks like a layout but lacks a table or column
        return str(exc)
    finally:
        source.close()
    return None


def _summarise(tally: Counter[tuple[str, str, str]], first: list[Problem], report: Path) -> None:
    if not tally:
        return
    print(f"problems and notes (every row is in {report}):", file=sys.stderr)
    for (kind, column, reason), count in tally.most_common():
        print(f"  {count:>8,}  {kind:<7} {column}: {reason}", file=sys.stderr)
    for problem in first:
        print(
            f"  e.g. {problem.table} id {problem.sqlite_id}, {problem.column}={problem.value}: "
            f"{problem.reason}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    sys.exit(main())
