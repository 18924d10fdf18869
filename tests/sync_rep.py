"""A primary whose synchronous standby is missing: every commit waits for it.

The scratch PostgreSQL of the embedded extra, migrated, then told that its synchronous standby
is ``missing`` (``synchronous_standby_names``, a reload): a commit waits until the wait is
cancelled, which ``Canceller`` does as an operator or an orchestrator would
(``pg_cancel_backend``). The server then acknowledges the commit with a WARNING: committed
locally, maybe not replicated. Also used to measure what a commit costs when a retry confirms.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from tests import support

# the superuser's own commits (cleanup, checks) do not wait
LOCAL = "-c synchronous_commit=local"


class LonelyPrimary(support.OwnServers):
    """An embedded server with a migrated database and no synchronous standby to confirm;
    ``with LonelyPrimary() as primary``: stopped and removed on every path.

    Its folder is its own (not pytest's tmp_path, which a concurrent pytest run on the machine
    may clean up under a running server)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="persistence-syncrep-"))
        self.server: Any = None

    def start(self) -> None:
        from persistence import Settings, migrate
        from persistence.embedded import EmbeddedServer

        self.server = EmbeddedServer(self.base / "pgdata").start()
        name = support.create_database(self.server.admin_url, "persistence_syncrep")
        self.url = support.with_database(self.server.admin_url, name)
        migrate.apply(Settings(url=self.url))
        self.expect_standby("missing")

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url, autocommit=True, options=LOCAL)

    def expect_standby(self, names: str) -> None:
        """Set synchronous_standby_names ('' for none) and wait until the server applied it."""
        with self.admin() as conn:
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with psycopg.connect(self.url, autocommit=True) as conn:
                row = conn.execute("SHOW synchronous_standby_names").fetchone()
            if row == (names,):
                return
            time.sleep(0.02)
        raise RuntimeError(f"synchronous_standby_names did not become {names!r}")

    @contextlib.contextmanager
    def standby_back(self) -> Iterator[None]:
        """As if a standby had attached: commits stop waiting, until the block ends."""
        self.expect_standby("")
        try:
            yield
        finally:
            self.expect_standby("missing")

    def count(self, sql: str, *params: Any) -> int:
        with self.admin() as conn:
            row = conn.execute(sql, params).fetchone()
        assert row is not None
        return int(row[0])

    def remove(self) -> None:
        """Stop the server (a clean drop of the database would wait for the standby too) and
        delete its folder."""
        try:
            if self.server is not None:
                self.server.stop(mode="immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


class Canceller:
    """While open, cancels every commit waiting for a synchronous standby, after ``after`` s."""

    def __init__(self, primary: LonelyPrimary, after: float = 0.05) -> None:
        self.primary = primary
        self.after = after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Canceller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with self.primary.admin() as conn:
            while not self._stop.wait(0.01):
                conn.execute(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                    "WHERE wait_event = 'SyncRep' AND now() - state_change > %s * interval '1 s'",
                    (self.after,),
                )
