"""``python -m persistence.migrate``: parse arguments, call the library, print the outcome.

Exit codes: 0 done (or nothing to do), 1 a migration failed or another error, 2 bad usage or
configuration, 3 history and files disagree (changed, missing or out-of-order migration),
4 ``verify`` found pending migrations, 5 the database or the migration lock is unavailable
(retry later), 6 the server refused the credentials (fix them: retrying will not help).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from persistence import migrate
from persistence._cli import AUTHENTICATION, FAILED, OK, UNAVAILABLE, USAGE, configure_logging
from persistence._cli import exit_code as shared_exit_code
from persistence.config import Settings, python_m
from persistence.errors import MigrationDrift, PersistenceError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_AUTHENTICATION = (
    OK,
    FAILED,
    USAGE,
    UNAVAILABLE,
    AUTHENTICATION,
)
EXIT_DRIFT, EXIT_PENDING = 3, 4


def _common(*, on_subcommand: bool) -> argparse.ArgumentParser:
    # on a subcommand the defaults are suppressed, so they do not reset what came before it
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if on_subcommand else {}
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url", help="PostgreSQL URL (default: DATABASE_URL, else embedded)", **default
    )
    common.add_argument(
        "--migrations-dir",
        type=Path,
        help="folder of migrations (default: PERSISTENCE_MIGRATIONS_DIR, else the shipped ones)",
        **default,
    )
    common.add_argument(
        "--dry-run",
        action="store_true",
        help="print the SQL that would run, run nothing",
        **default,
    )
    return common


def _parser() -> argparse.ArgumentParser:
    common, sub_common = _common(on_subcommand=False), _common(on_subcommand=True)
    parser = argparse.ArgumentParser(
        prog="python -m persistence.migrate",
        description="Apply, roll back and inspect the database migrations. With no command: up.",
        epilog="results go to stdout, logs and errors to stderr (-v: each step's log too). "
        "Exit codes: 0 ok, 1 failed, 2 usage/configuration, 3 drift, 4 pending (verify), "
        "5 database or lock unavailable, 6 credentials refused",
        parents=[common],
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step to stderr")
    commands = parser.add_subparsers(dest="command")
    up = commands.add_parser("up", parents=[sub_common], help="apply pending migrations")
    up.add_argument("--to", type=int, metavar="VERSION", help="stop after this version")
    down = commands.add_parser("down", parents=[sub_common], help="roll back (one step by default)")
    group = down.add_mutually_exclusive_group()
    group.add_argument(
        "--to", type=int, metavar="VERSION", help="roll back every version above this"
    )
    group.add_argument("--steps", type=int, metavar="N", help="roll back the newest N migrations")
    status = commands.add_parser(
        "status", parents=[sub_common], help="show every version and its state"
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    commands.add_parser(
        "verify", parents=[sub_common], help="exit non-zero if anything is pending or drifted"
    )
    new = commands.add_parser(
        "new", parents=[sub_common], help="create the next numbered up/down pair"
    )
    new.add_argument("description", nargs="+")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.database_url:
        overrides["url"] = args.database_url
    if args.migrations_dir:
        overrides["migrations_dir"] = args.migrations_dir
    return Settings.from_env(**overrides)


def _print_run(result: migrate.RunResult) -> None:
    if not result.migrations:
        print(
            "nothing to do: the database is up to date"
            if result.direction == "up"
            else "nothing to roll back"
        )
        return
    for index, migration in enumerate(result.migrations):
        path = migration.path if result.direction == "up" else migration.down_path
        if result.dry_run:
            sql = migration.sql if result.direction == "up" else migration.down_sql
            print(f"-- would run {path}\n{(sql or '').rstrip()}\n")
        else:
            verb = "applied" if result.direction == "up" else "reverted"
            print(
                f"{verb} {migration.version:04d} {migration.description} "
                f"({result.durations_ms[index]} ms)"
            )


def _print_status(rows: list[migrate.MigrationStatus], as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "version": r.version,
                        "description": r.description,
                        "state": r.state,
                        "applied_at": r.applied_at.isoformat() if r.applied_at else None,
                        "execution_ms": r.execution_ms,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    print(f"{'version':<8} {'state':<8} {'applied at (UTC)':<20} description")
    for r in rows:
        when = r.applied_at.strftime("%Y-%m-%d %H:%M:%S") if r.applied_at else "-"
        print(f"{r.version:04d}     {r.state:<8} {when:<20} {r.description}")


def run(args: argparse.Namespace) -> int:
    command = args.command or "up"
    if command == "new":
        up, down = migrate.new_migration(
            " ".join(args.description), migrations_dir=args.migrations_dir
        )
        print(f"created {up}\ncreated {down}")
        return EXIT_OK
    settings = _settings(args)
    if command == "up":
        _print_run(migrate.apply(settings, target=getattr(args, "to", None), dry_run=args.dry_run))
    elif command == "down":
        _print_run(
            migrate.rollback(settings, target=args.to, steps=args.steps, dry_run=args.dry_run)
        )
    elif command == "status":
        _print_status(migrate.status(settings), as_json=args.json)
    elif command == "verify":
        pending = migrate.verify(settings)
        if pending:
            names = ", ".join(m.path.name for m in pending)
            print(f"pending: {names}; run `{python_m('persistence.migrate')}`", file=sys.stderr)
            return EXIT_PENDING
        print("verify: ok, every migration is applied and unchanged")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # stdout carries the results, once; stderr the warnings (and, with -v, each step)
    configure_logging(logging.WARNING)
    if args.verbose:
        logging.getLogger("persistence").setLevel(logging.DEBUG)
    try:
        return run(args)
    except PersistenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DRIFT if isinstance(exc, MigrationDrift) else shared_exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
