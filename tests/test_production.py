"""Production claims, tested: PgBouncer, backup and restore, least privilege, SSL.

The commands here are the ones docs/production.md gives.
"""

from __future__ import annotations

import base64
import configparser
import os
import pty
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from persistence import Database, DatabaseUnavailable
from tests.factories import make_auth, make_trade
from tests.support import (
    ROOT,
    command_of,
    create_database,
    drop_database,
    environment_without,
    migrated_database,
    postgres_binary,
    run_as_written,
    shell_blocks,
    store_plain_auth,
    with_database,
)

PRODUCTION = ROOT / "docs" / "production.md"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def shared_dir(owner: str) -> Path:
    """A temporary directory another system user can use (pytest's tmp_path is root-only)."""
    folder = Path(tempfile.mkdtemp(prefix="persistence-"))
    folder.chmod(0o755)
    shutil.chown(folder, owner)
    return folder


def as_user(user: str, *command: str) -> list[str]:
    return ["runuser", "-u", user, "--", *command] if os.geteuid() == 0 else list(command)


# --- PgBouncer ---------------------------------------------------------------------------


def documented_pgbouncer_settings() -> dict[str, str]:
    """The [pgbouncer] section of production.md's pgbouncer.ini."""
    (ini,) = re.findall(r"```ini\n(.*?)```", PRODUCTION.read_text(), flags=re.S)
    parser = configparser.ConfigParser()
    parser.read_string(ini)
    settings = dict(parser["pgbouncer"])
    assert settings["pool_mode"] == "transaction", settings
    return settings


@pytest.fixture(scope="module")
def pgbouncer(admin_url: str) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of the test server; yields HOST:PORT."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    server = conninfo_to_dict(admin_url)
    if server.get("password"):
        pytest.skip(
            "the PgBouncer test configures auth_type=trust: it needs a TEST_DATABASE_URL "
            "without a password, on a server that trusts it"
        )
    host = str(server.get("host") or "127.0.0.1")
    # PgBouncer will not run as root; it runs as whoever can reach the server's socket
    user = Path(host).owner() if host.startswith("/") else "nobody"
    folder = shared_dir(user)
    port = free_port()
    # production.md's settings, with this machine's addresses; the test's server has no
    # passwords (trust), its databases are throwaway (all mapped), and a run opens many clients
    settings = {
        **documented_pgbouncer_settings(),
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(folder / "users.txt"),
        "max_client_conn": "200",
        "logfile": str(folder / "pgbouncer.log"),
        "pidfile": str(folder / "pgbouncer.pid"),
    }
    config = folder / "pgbouncer.ini"
    config.write_text(
        f"[databases]\n* = host={host} port={server.get('port') or 5432}\n[pgbouncer]\n"
        + "".join(f"{key} = {value}\n" for key, value in settings.items())
    )
    (folder / "users.txt").write_text(f'"{server.get("user") or "postgres"}" ""\n')
    for item in folder.iterdir():
        shutil.chown(item, user)
    subprocess.run(as_user(user, binary, "-d", str(config)), check=True)
    deadline = time.monotonic() + 10
    while not (folder / "pgbouncer.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        pid = int((folder / "pgbouncer.pid").read_text())
        os.kill(pid, 15)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_repository_tests_pass_through_pgbouncer_in_transaction_mode(
    pgbouncer: str, admin_url: str, tmp_path: Path
) -> None:
    env = environment_without("DATABASE_URL")
    env.update(
        TEST_DATABASE_URL=admin_url,
        # the harness then sets PERSISTENCE_PREPARE_THRESHOLD=none (tests/conftest.py): PgBouncer
        # before 1.21 cannot carry server-side prepared statements
        TEST_DATABASE_PROXY=pgbouncer,
    )
    # its own basetemp: a nested pytest would reset /tmp/pytest-of-USER to mode 0700, which
    # locks the embedded scratch server (another system user) out of its data directory
    basetemp = tmp_path / "nested"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-n",
            "0",  # one process: this test is already one of the run's workers
            f"--basetemp={basetemp}",
            "tests/test_repositories.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


@pytest.mark.slow
def test_the_pgbouncer_block_runs_with_this_servers_addresses(
    pgbouncer: str, admin_url: str
) -> None:
    """production.md's PgBouncer block, run by bash with PgBouncer's and the server's addresses
    for its placeholders: migrate goes to the server directly, then the bot's settings (the
    exported URL, through PgBouncer, and no prepared statements) give a healthy report."""
    block = production_block("PERSISTENCE_PREPARE_THRESHOLD=none")
    name = create_database(admin_url, "persistence_pgbouncer")
    direct = with_database(admin_url, name)
    through = make_conninfo(direct, host="127.0.0.1", port=pgbouncer.rsplit(":", 1)[1])
    filled = re.sub(
        r"postgresql://persistence_app:PASSWORD@127\.0\.0\.1:6432/persistence",
        lambda _: shlex.quote(through),
        block,
    )
    filled = re.sub(
        r"postgresql://persistence_owner:PASSWORD@10\.0\.0\.5:5432/persistence",
        lambda _: shlex.quote(direct),
        filled,
    )
    assert "PASSWORD" not in filled
    env = environment_without("DATABASE_URL", "PERSISTENCE_PREPARE_THRESHOLD")
    try:
        ran = run_as_written(f"{filled}\n.venv/bin/python -m persistence.health", env)
        assert ran[-2].command.startswith(".venv/bin/python -m persistence.migrate --database-url")
        report = ran[-1].printed
        assert report.startswith("status: healthy") and f"database: {name}\n" in report, report
    finally:
        drop_database(admin_url, name)


# --- Backup and restore ------------------------------------------------------------------


RESTORED = "persistence_restored"  # the name production.md restores into


def production_block(containing: str) -> str:
    """The shell block of docs/production.md that contains ``containing``."""
    found = [block for block in shell_blocks(PRODUCTION) if containing in block]
    assert len(found) == 1, f"production.md: {len(found)} shell blocks contain {containing!r}"
    return found[0]


def as_written_env(url: str, tool: str, **variables: str) -> dict[str, str]:
    """The environment a docs block runs in: the client tools of ``url``'s server version and
    this interpreter first on PATH, no DATABASE_URL but the one given in ``variables``."""
    tools = Path(postgres_binary(url, tool)).parent
    env = environment_without("DATABASE_URL")
    env.update(PATH=f"{tools}:{Path(sys.executable).parent}:{os.environ['PATH']}", **variables)
    return env


@pytest.mark.slow
def test_backup_and_restore_keep_every_row(admin_url: str, tmp_path: Path) -> None:
    """The backup and restore blocks of docs/production.md, run as written by bash."""
    backup, restore = production_block("pg_dump "), production_block("pg_restore ")
    restored_url = with_database(admin_url, RESTORED)
    drop_database(admin_url, RESTORED)
    with migrated_database(admin_url, "persistence_backup") as source:
        with Database.connect(source) as db:
            db.trades.insert_many(make_trade(log_index=i) for i in range(2_000))
            db.trades.update_status(
                db.trades.get_by_id(5).tx_hash, 4, "COMPLETED", schwab_order_id="O5"
            )  # type: ignore[union-attr]
            db.schwab_auth.save(make_auth())
        env = as_written_env(
            source, "pg_dump", DATABASE_URL=source, ADMIN_URL=admin_url, RESTORE_URL=restored_url
        )
        try:
            run_as_written(backup, env, cwd=tmp_path)
            (dump,) = tmp_path.glob("persistence-*.dump")
            # the docs name an example file; the one just written has today's date
            restore = re.sub(r"persistence-\d{8}-\d{6}\.dump", dump.name, restore)
            run_as_written(restore, env, cwd=tmp_path)
            for table in ("trades", "schwab_auth", "schema_migrations"):
                query = sql.SQL("SELECT * FROM {} ORDER BY 1").format(sql.Identifier(table))
                with psycopg.connect(source) as a, psycopg.connect(restored_url) as b:
                    rows = a.execute(query).fetchall()
                    assert rows and rows == b.execute(query).fetchall(), table
            with Database.connect(restored_url) as restored:
                assert restored.trades.insert(make_trade()) == 2_001  # the sequence came along
        finally:
            drop_database(admin_url, RESTORED)


# --- Least privilege ---------------------------------------------------------------------


@pytest.fixture
def roles_database(admin_url: str) -> Iterator[str]:
    name = create_database(admin_url, "persistence_roles")
    url = with_database(admin_url, name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for role in ("persistence_app", "persistence_owner"):
                held = conn.execute(
                    "SELECT count(*) FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid "
                    "WHERE r.rolname = %s",
                    (role,),
                ).fetchone()
                if held == (0,):  # no other database still grants it anything
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def answer_password_prompts(command: str, password: str, env: dict[str, str]) -> None:
    """Run ``command`` on a terminal of its own, typing ``password`` at each prompt (psql's
    ``\\password`` asks on the terminal, twice)."""
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the terminal's end is its stdin, stdout and /dev/tty
        os.chdir(ROOT)
        os.execvpe("bash", ["bash", "-c", command], env)  # noqa: S606 (the command is bash)
    said = b""
    try:
        while True:
            try:
                chunk = os.read(terminal, 1024)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            said += chunk
            if said.rstrip().endswith(b":"):  # "Enter new password ...:", "Enter it again:"
                os.write(terminal, password.encode() + b"\n")
                said = b""
    finally:
        os.close(terminal)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"{command}: {said.decode(errors='replace')}"


def test_the_app_role_reads_and_writes_but_cannot_change_the_schema(roles_database: str) -> None:
    """The roles block of docs/production.md, run line by line as written, with the server's
    URL for its placeholders and the passwords typed at \\password's prompts."""
    block = production_block("docs/roles.sql")
    passwords = {role: secrets.token_hex(16) for role in ("persistence_owner", "persistence_app")}
    owner = make_conninfo(
        roles_database, user="persistence_owner", password=passwords["persistence_owner"]
    )
    app = make_conninfo(
        roles_database, user="persistence_app", password=passwords["persistence_app"]
    )
    env = as_written_env(roles_database, "psql", BOT_DB_AS_SUPERUSER=roles_database)
    commands = [command_of(line) for line in block.splitlines()]
    assert commands[0].startswith("export BOT_DB_AS_SUPERUSER=")  # set above, to this server
    for command in filter(None, commands[1:]):
        command = re.sub(r'"postgresql://persistence_owner:[^"]*"', shlex.quote(owner), command)
        prompted = re.search(r"\\password (\w+)", command)
        if prompted:
            answer_password_prompts(command, passwords[prompted.group(1)], env)
        else:
            run_as_written(command, env)

    with Database.connect(app) as db:
        trade = make_trade()
        db.trades.insert(trade)
        db.trades.insert_many([make_trade() for _ in range(3)])  # needs TEMPORARY
        db.trades.update_status(trade.tx_hash, 0, "FAILED")
        db.schwab_auth.save(make_auth())
        assert db.trades.count() == 4 and db.schwab_auth.load() is not None
        from persistence import health_check

        assert health_check(db).status == "healthy"  # it can read the history
    # each refused, with the message docs/production.md quotes
    forbidden = {
        "ALTER TABLE trades ADD COLUMN note text": "must be owner of table trades",
        "DROP TABLE schwab_auth": "must be owner of table schwab_auth",
        "CREATE TABLE sneaky (id int)": "permission denied for schema public",
        "TRUNCATE trades": "permission denied for table trades",
        "DELETE FROM schema_migrations": "permission denied for table schema_migrations",
        "CREATE INDEX ON trades (schwab_ticker)": "must be owner of table trades",
    }
    for statement, message in forbidden.items():
        with (
            psycopg.connect(app, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match=message),
        ):
            conn.execute(statement)
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM trades")
        assert conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename = 'trades'"
        ).fetchone() == ("persistence_owner",)


# --- Token keys --------------------------------------------------------------------------


def test_the_token_key_blocks_run_as_written(emptied_url: str) -> None:
    """production.md's token blocks, run by bash in order on a plain row as migration 0003 leaves
    it: a key made, the row sealed, a new key made and the row re-sealed under it. Each command
    prints what its comment says. Only the keys' `...` are filled in, with what new-key printed."""
    generate, seal, rotate = (
        production_block(text) for text in ("tokens new-key", "tokens encrypt", "tokens rotate")
    )
    auth = make_auth()
    store_plain_auth(emptied_url, auth)
    env = environment_without("PERSISTENCE_TOKEN_KEYS")
    env["DATABASE_URL"] = emptied_url

    def new_key(key_id: str) -> str:
        made, export = run_as_written(generate.replace("k20261125", key_id), env)
        assert export.command == f"export PERSISTENCE_TOKEN_KEYS='{key_id}:...'"
        key = made.printed.strip()
        assert made.comment == f"prints {key_id}:BASE64 (32 bytes)"
        assert key.startswith(f"{key_id}:") and len(base64.b64decode(key.split(":")[1])) == 32
        return key

    old = new_key("k20261125")
    status, encrypt = run_as_written(seal, {**env, "PERSISTENCE_TOKEN_KEYS": old})
    for ran in (status, encrypt):  # each comment quotes the output, "..." for what it skips
        assert all(part in ran.printed for part in ran.comment.split(" ... ")), ran
    new = new_key("k20270101")
    filled = rotate.replace("NEW...", new.split(":")[1]).replace("OLD...", old.split(":")[1])
    rotated, status, _ = run_as_written(filled, env)[1:]
    assert rotated.comment in rotated.printed, rotated
    assert status.comment == "nothing left under k20261125"
    assert status.printed.startswith("rows: 1 under 'k20270101'\n"), status
    # the last line: the old key dropped, the tokens still open
    with Database.connect(emptied_url, token_keys=new) as db:
        assert db.schwab_auth.load() == auth
    with psycopg.connect(emptied_url) as conn:
        stored = conn.execute("SELECT * FROM schwab_auth").fetchall()
    assert auth.access_token not in repr(stored) and auth.refresh_token not in repr(stored)


# --- SSL ---------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        cwd=folder,
    )


@pytest.fixture(scope="module")
def ssl_server() -> Iterator[dict[str, Any]]:
    """A throwaway PostgreSQL with a certificate for "localhost" signed by a test CA."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins or shutil.which("openssl") is None or os.geteuid() != 0:
        pytest.skip("needs Debian's PostgreSQL server binaries, openssl, and root to switch user")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres system user")
    bindir = bins[-1].parent
    folder = shared_dir("postgres")
    make_ca(folder, "root")
    make_ca(folder, "wrong-root")
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=folder,
    )
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "root.crt",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
        cwd=folder,
    )
    for item in folder.iterdir():
        shutil.chown(item, "postgres")
    (folder / "server.key").chmod(0o600)
    data = folder / "data"
    subprocess.run(
        as_user(
            "postgres",
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ),
        check=True,
        capture_output=True,
    )
    (data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
    port = free_port()
    options = " ".join(
        (
            "-c ssl=on",
            f"-c ssl_cert_file={folder}/server.crt",
            f"-c ssl_key_file={folder}/server.key",
            "-c listen_addresses=127.0.0.1",
            f"-c port={port}",
            f"-c unix_socket_directories={folder}",
        )
    )
    subprocess.run(
        as_user(
            "postgres",
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "log"),
            "-w",
            "start",
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield {"folder": folder, "port": port}
    finally:
        subprocess.run(
            as_user("postgres", str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"),
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def ssl_url(server: dict[str, Any], host: str) -> str:
    return f"postgresql://postgres@{host}:{server['port']}/postgres?hostaddr=127.0.0.1"


def test_verify_full_connects_with_the_right_root_certificate(ssl_server: dict[str, Any]) -> None:
    root = ssl_server["folder"] / "root.crt"
    with (
        Database.connect(
            ssl_url(ssl_server, "localhost"), sslmode="verify-full", sslrootcert=root
        ) as db,
        db.pool.connection() as conn,
    ):
        assert conn.execute(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone() == (True,)


def test_verify_full_refuses_a_wrong_root_certificate(ssl_server: dict[str, Any]) -> None:
    wrong = ssl_server["folder"] / "wrong-root.crt"
    with pytest.raises(DatabaseUnavailable, match="certificate verify failed"):
        Database.connect(ssl_url(ssl_server, "localhost"), sslmode="verify-full", sslrootcert=wrong)


def test_verify_full_refuses_a_wrong_host_name(ssl_server: dict[str, Any]) -> None:
    root = ssl_server["folder"] / "root.crt"
    with pytest.raises(DatabaseUnavailable, match="does not match host name"):
        Database.connect(
            ssl_url(ssl_server, "db.example.invalid"), sslmode="verify-full", sslrootcert=root
        )


def test_the_readmes_real_server_block_runs_over_verified_ssl(ssl_server: dict[str, Any]) -> None:
    """README's block for a real server, run by bash with this server for db.example.com and
    its root certificate where libpq looks for one (PGSSLROOTCERT): the main job applies the
    migrations over a connection whose certificate and host name were verified."""
    (block,) = [b for b in shell_blocks(ROOT / "README.md") if "@db.example.com:" in b]
    export, root, migrate, tests = block.splitlines()
    assert tests.startswith("TEST_DATABASE_URL=")  # CI runs the tests that way
    assert root.startswith("export PERSISTENCE_SSLROOTCERT=/")
    script = f"{export}\n{root}\n{migrate}".replace(
        "bot:PASSWORD@db.example.com:5432/persistence",
        f"postgres@localhost:{ssl_server['port']}/postgres",
    ).replace(command_of(root).split("=", 1)[1], str(ssl_server["folder"] / "root.crt"))
    assert "sslmode=verify-full" in script
    env = environment_without("DATABASE_URL", "PERSISTENCE_SSLROOTCERT", "PGSSL*")
    run_as_written(script, env)
    env = {"PGSSLROOTCERT": str(ssl_server["folder"] / "root.crt")}
    url = ssl_url(ssl_server, "localhost")
    with psycopg.connect(url, sslmode="verify-full", sslrootcert=env["PGSSLROOTCERT"]) as conn:
        (applied,) = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()  # type: ignore[misc]
    assert applied == len(list((ROOT / "migrations").glob("*.up.sql")))
