"""A Patroni cluster on loopback: etcd, three PostgreSQL nodes under Patroni, HAProxy in front.

Built from the Debian packages ``patroni``, ``etcd-server`` and ``haproxy`` and the PostgreSQL
binaries of tests/failover.py. Each node's Patroni configuration is production.md's YAML as
written, and HAProxy's is its haproxy.cfg, with loopback addresses, free ports, folders of a
temporary directory (not pytest's tmp_path, which a concurrent run may clean up under a running
server) and test passwords put in. Every process is started here and killed by its PID, and the
folder removed, on every path (``with PatroniCluster() as cluster``). As root, Patroni and
PostgreSQL run as the embedded package's system user.

What the scenarios do to it: ``kill_leader_postmaster`` (the leader's PostgreSQL dies),
``kill_leader_patroni`` (its Patroni dies; the supervisor kills the leftover postmaster before
it restarts Patroni, as systemd's KillMode=control-group does), ``switchover`` and
``stop_replicas`` / ``start_replicas``.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import attrs
import psycopg

from tests.failover import (
    DOCUMENTED_URL,
    binaries,
    free_port,
    kill_tree,
    postmaster_pid,
    system_user,
)
from tests.support import ROOT, OwnServers, environment_without

PRODUCTION = ROOT / "docs" / "production.md"
# the passwords the documented YAML leaves to the reader, and the superuser's in the URLs
PASSWORDS = {
    "SUPERUSER_PASSWORD": "test-superuser-pw",
    "REPLICATION_PASSWORD": "test-replication-pw",
    "REWIND_PASSWORD": "test-rewind-pw",
}


def tools() -> bool:
    """Whether patroni, etcd, haproxy and PostgreSQL binaries are all here."""
    return binaries() is not None and all(
        shutil.which(tool) or Path("/usr/sbin", tool).exists()
        for tool in ("patroni", "etcd", "haproxy")
    )


def documented(fence: str) -> str:
    """production.md's one block fenced ```fence (yaml: Patroni's, haproxy: HAProxy's)."""
    (block,) = re.findall(rf"```{fence}\n(.*?)```", PRODUCTION.read_text(), flags=re.S)
    return str(block)


def _substituted(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in production.md's block"
        text = text.replace(old, new)
    return text


def _gone(pid: int) -> bool:
    """Whether a process has exited (a zombie no one reaps counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True


def _wait(what: str, check: Any, timeout: float, logs: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise RuntimeError(f"{what} within {timeout} s" + (f"\n{logs()}" if logs else ""))


@attrs.define
class Node:
    """One PostgreSQL server under its Patroni; ``name`` and ``address`` as in the docs."""

    name: str
    address: str
    pg_port: int
    rest_port: int
    folder: Path
    patroni: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def postmaster(self) -> int | None:
        """The live postmaster of this node's data directory, if any (checked against its
        command line, so that a PID reused since is never killed)."""
        pid = postmaster_pid(self.data)
        if pid is None or _gone(pid):
            return None
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return None
        return pid if str(self.data).encode() in command else None


class PatroniCluster(OwnServers):
    """etcd, three Patroni nodes (a leader, a synchronous standby, a replica) and HAProxy."""

    def __init__(self, *, bindir: Path | None = None) -> None:
        found = bindir or binaries()
        if found is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl, pg_basebackup) here")
        self.bindir = found
        self.user = system_user()
        self.base = Path(tempfile.mkdtemp(prefix="persistence-patroni-"))
        self.etcd_ports = (free_port(), free_port())  # client, peer
        self.proxy_ports = (free_port(), free_port())  # writes (/primary), reads (/replica)
        self.nodes = [
            Node(f"db{n}", f"10.0.0.{10 + n}", free_port(), free_port(), self.base / f"db{n}")
            for n in (1, 2, 3)
        ]
        self._etcd: subprocess.Popen[bytes] | None = None
        self._haproxy: subprocess.Popen[bytes] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def _spawn(self, args: list[str], log: Path, *, as_user: bool) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.base,
                user=self.user if as_user else None,
                env=environment_without("PYTEST_*", "DATABASE_URL", "PG*"),
                start_new_session=True,
            )

    def start(self) -> None:
        if self.user:
            shutil.chown(self.base, self.user)
        client, peer = self.etcd_ports
        self._etcd = self._spawn(
            [
                "etcd",
                "--name=etcd1",
                f"--data-dir={self.base / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=etcd1=http://127.0.0.1:{peer}",
            ],
            self.base / "etcd.log",
            as_user=False,
        )
        _wait("etcd did not answer", self._etcd_healthy, 20, lambda: self._log("etcd.log"))
        for node in self.nodes:
            node.folder.mkdir(mode=0o700)
            if self.user:
                shutil.chown(node.folder, self.user)
            (node.folder / "patroni.yml").write_text(self._patroni_yaml(node))
            self.start_patroni(node)
        self.wait_until_healthy()
        (self.base / "haproxy.cfg").write_text(self._haproxy_cfg())
        self._haproxy = self._spawn(
            ["haproxy", "-db", "-f", str(self.base / "haproxy.cfg")],
            self.base / "haproxy.log",
            as_user=False,
        )
        self.wait_for_route()

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.etcd_ports[0]}/health", timeout=1
            ) as answer:
                return bool(json.load(answer).get("health") == "true")
        except OSError:
            return False

    def _patroni_yaml(self, node: Node) -> str:
        replacements = {
            "name: db1": f"name: {node.name}",
            "10.0.0.11:8008": f"127.0.0.1:{node.rest_port}",
            "10.0.0.11:5432": f"127.0.0.1:{node.pg_port}",
            "10.0.0.10:2379": f"127.0.0.1:{self.etcd_ports[0]}",
            "10.0.0.0/24": "127.0.0.1/32",
            "/var/lib/postgresql/15/main": str(node.data),
            "/usr/lib/postgresql/15/bin": str(self.bindir),
            "/var/lib/postgresql/.pgpass_patroni": str(node.folder / "pgpass"),
            "/var/run/postgresql": str(node.folder),
        }
        return _substituted(documented("yaml"), replacements | PASSWORDS)

    def _haproxy_cfg(self) -> str:
        writes, reads = self.proxy_ports
        replacements = {"bind 127.0.0.1:5000": f"bind 127.0.0.1:{writes}"}
        replacements["bind 127.0.0.1:5001"] = f"bind 127.0.0.1:{reads}"
        for node in self.nodes:
            replacements[f"server {node.name} {node.address}:5432 check port 8008"] = (
                f"server {node.name} 127.0.0.1:{node.pg_port} check port {node.rest_port}"
            )
        return _substituted(documented("haproxy"), replacements)

    def start_patroni(self, node: Node) -> None:
        config = node.folder / "patroni.yml"
        node.patroni = self._spawn(
            ["patroni", str(config)], node.folder / "patroni.log", as_user=True
        )

    def remove(self) -> None:
        """Kill every process by its PID (Patroni first, so that none restarts PostgreSQL)
        and delete everything; safe to call twice."""
        for node in self.nodes:
            if node.patroni is not None:
                with contextlib.suppress(ProcessLookupError):
                    node.patroni.kill()
                node.patroni.wait(10)
        for node in self.nodes:
            if (pid := node.postmaster()) is not None:
                kill_tree(pid)
        for process in (self._haproxy, self._etcd):
            if process is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)

    # --- what Patroni says -------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the cluster (GET /cluster of any node that answers)."""
        for node in self.nodes:
            if node.patroni is None or node.patroni.poll() is not None:
                continue
            try:
                url = f"http://127.0.0.1:{node.rest_port}/cluster"
                with urllib.request.urlopen(url, timeout=1) as answer:
                    return list(json.load(answer)["members"])
            except (OSError, ValueError, KeyError):
                continue
        return []

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def _with_role(self, *roles: str) -> list[Node]:
        return [
            self.node(m["name"])
            for m in self.members()
            if m.get("role") in roles and m.get("state") == "running"
        ]

    def leader(self) -> Node | None:
        leaders = self._with_role("leader")
        return leaders[0] if leaders else None

    def _accepts_writes(self, node: Node) -> bool:
        try:
            with psycopg.connect(self.node_url(node), connect_timeout=1, autocommit=True) as conn:
                return conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        except psycopg.Error:
            return False

    def wait_for_leader(self, *, other_than: Node | None = None, timeout: float = 60) -> Node:
        """The leader, once Patroni names one (not ``other_than``) that accepts writes."""

        def found() -> Node | None:
            leader = self.leader()
            if leader is None or leader is other_than or not self._accepts_writes(leader):
                return None
            return leader

        return _wait("no leader accepting writes", found, timeout, self.logs)  # type: ignore[no-any-return]

    def wait_until_healthy(self, timeout: float = 90) -> Node:
        """A leader streaming to a synchronous standby and a replica; returns the leader."""

        def healthy() -> Node | None:
            leader = self.leader()
            # Patroni's sync key names the standby (until it does, strict mode's '*' makes any
            # standby "sync" in pg_stat_replication, and Patroni fails over to none)
            if leader is None or len(self._with_role("sync_standby")) != 1:
                return None
            if len(self._with_role("replica")) != 1:
                return None
            try:
                with psycopg.connect(self.node_url(leader), connect_timeout=1) as conn:
                    states = conn.execute(
                        "SELECT sync_state FROM pg_stat_replication WHERE state = 'streaming'"
                    ).fetchall()
            except psycopg.Error:
                return None
            return leader if sorted(states) == [("async",), ("sync",)] else None

        return _wait("the cluster did not become healthy", healthy, timeout, self.logs)  # type: ignore[no-any-return]

    def wait_for_route(self, timeout: float = 30) -> None:
        """Until HAProxy's write port reaches the leader alone: one connection per node in a
        row, all on the leader. A freshly started HAProxy counts every node up until its first
        checks, and takes turns among them (a replica's session it then marks down is cut
        mid-handshake: one CI run's set-up failed on that), so one connection is not enough."""

        def routed() -> bool:
            leader = self.leader()
            if leader is None:
                return False
            try:
                for _ in self.nodes:
                    with psycopg.connect(self.primary_url(), connect_timeout=1) as conn:
                        row = conn.execute("SELECT inet_server_port()").fetchone()
                    if row != (leader.pg_port,):
                        return False
            except psycopg.Error:
                return False
            return True

        _wait("HAProxy did not route to the leader", routed, timeout, self.logs)

    # --- what the scenarios do ---------------------------------------------------------------

    def kill_leader_postmaster(self) -> Node:
        """SIGKILL the leader's postmaster and its backends; returns the old leader."""
        leader = self.leader()
        assert leader is not None, "no leader"
        pid = leader.postmaster()
        assert pid is not None, f"{leader.name}'s PostgreSQL is not running"
        kill_tree(pid)
        return leader

    def kill_leader_patroni(self, *, supervisor: str = "control-group") -> Node:
        """SIGKILL the leader's Patroni; its PostgreSQL keeps running as a primary. Then the
        supervisor, named after systemd's KillMode: ``control-group`` kills that leftover
        postmaster and starts Patroni again; ``process`` starts Patroni again beside it (the
        trap: production.md); ``none`` leaves it running alone. Returns the old leader."""
        assert supervisor in ("control-group", "process", "none"), supervisor
        leader = self.leader()
        assert leader is not None and leader.patroni is not None, "no leader"
        leader.patroni.send_signal(signal.SIGKILL)
        leader.patroni.wait(10)
        if supervisor == "control-group" and (pid := leader.postmaster()) is not None:
            kill_tree(pid)
            _wait("the leftover postmaster did not die", lambda: _gone(pid), 10)
        if supervisor != "none":
            self.start_patroni(leader)
        return leader

    def switchover(self) -> Node:
        """Patroni's switchover (POST /switchover) to the synchronous standby; returns the new
        leader once it accepts writes."""
        leader = self.leader()
        assert leader is not None
        (candidate,) = self._with_role("sync_standby")
        request = urllib.request.Request(
            f"http://127.0.0.1:{leader.rest_port}/switchover",
            data=json.dumps({"leader": leader.name, "candidate": candidate.name}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 (http, ours)
            assert answer.status == 200, answer.read()
        return self.wait_for_leader(other_than=leader)

    def stop_replicas(self) -> list[Node]:
        """Stop both replicas' Patroni (SIGTERM: each stops its PostgreSQL, then exits)."""
        leader = self.leader()
        replicas = [node for node in self.nodes if node is not leader]
        for node in replicas:
            assert node.patroni is not None
            node.patroni.send_signal(signal.SIGTERM)
        for node in replicas:
            assert node.patroni is not None
            node.patroni.wait(60)
            _wait(f"{node.name}'s PostgreSQL did not stop", lambda n=node: not n.postmaster(), 30)
        return replicas

    def start_replicas(self, replicas: list[Node]) -> None:
        for node in replicas:
            self.start_patroni(node)
        self.wait_until_healthy()

    # --- where to connect --------------------------------------------------------------------

    def node_url(self, node: Node, dbname: str = "postgres") -> str:
        password = PASSWORDS["SUPERUSER_PASSWORD"]
        return f"postgresql://postgres:{password}@127.0.0.1:{node.pg_port}/{dbname}"

    def primary_url(self, dbname: str = "postgres") -> str:
        """HAProxy's write port: whichever node Patroni's REST API calls the primary."""
        password = PASSWORDS["SUPERUSER_PASSWORD"]
        return f"postgresql://postgres:{password}@127.0.0.1:{self.proxy_ports[0]}/{dbname}"

    def replica_url(self, dbname: str = "postgres") -> str:
        """HAProxy's read port: the replicas, in turn."""
        password = PASSWORDS["SUPERUSER_PASSWORD"]
        return f"postgresql://postgres:{password}@127.0.0.1:{self.proxy_ports[1]}/{dbname}"

    def multi_host_url(self, nodes: list[Node], dbname: str = "postgres") -> str:
        """production.md's multi-host URL (read-write), with ``nodes`` in that order."""
        hosts = ",".join(f"127.0.0.1:{node.pg_port}" for node in nodes)
        password = PASSWORDS["SUPERUSER_PASSWORD"]
        url = _substituted(
            DOCUMENTED_URL,
            {
                "bot:PASSWORD@": f"postgres:{password}@",
                "db1:5432,db2:5432": hosts,
                "/persistence?": f"/{dbname}?",
            },
        )
        return url

    # --- when something fails ----------------------------------------------------------------

    def _log(self, name: str, tail: int = 40) -> str:
        """The last ``tail`` lines of a log, without the tracebacks Patroni's REST API logs
        when HAProxy closes a health check's connection first."""
        path = self.base / name
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        kept = [line for line in lines if line[:4].isdigit() and "Exception happened" not in line]
        return "\n".join([f"--- {name}", *kept[-tail:]])

    def logs(self) -> str:
        names = ["etcd.log", *(f"{node.name}/patroni.log" for node in self.nodes)]
        return "\n".join(self._log(name) for name in names)
