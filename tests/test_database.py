"""The Database handle against a real server: connect, ping, close, errors, restart."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from persistence import (
    AuthenticationFailed,
    ConfigurationError,
    Database,
    DatabaseUnavailable,
)
from tests import support
from tests.factories import make_trade
from tests.support import SilentProxy

SECRET = "N0t-The-Pa55word"


def test_connect_runs_a_query_and_closes_twice(database_url: str) -> None:
    db = Database.connect(database_url)
    assert db.ping() > 0
    with db.pool.connection() as conn:
        zone, app = conn.execute(
            "SELECT current_setting('TimeZone'), current_setting('application_name')"
        ).fetchone()  # type: ignore[misc]
    assert (zone, app) == ("UTC", "persistence")
    db.close()
    db.close()
    assert db.closed
    assert "closed" in repr(db)


def test_context_manager_closes(database_url: str) -> None:
    with Database.connect(database_url) as db:
        db.ping()
    assert db.closed


def test_session_settings_apply_to_every_connection(database_url: str) -> None:
    with (
        Database.connect(
            database_url, statement_timeout=1.5, application_name="probe", min_size=2
        ) as db,
        db.pool.connection() as a,
        db.pool.connection() as b,
    ):
        for conn in (a, b):
            row = conn.execute(
                "SELECT current_setting('statement_timeout'), current_setting('application_name')"
            ).fetchone()
            assert row == ("1500ms", "probe")


def test_options_in_the_url_are_kept(database_url: str) -> None:
    url = make_conninfo(database_url, options="-c work_mem=7MB -c statement_timeout=4s")
    with Database.connect(url) as db, db.pool.connection() as conn:
        row = conn.execute(
            "SELECT current_setting('work_mem'), current_setting('statement_timeout'), "
            "current_setting('TimeZone')"
        ).fetchone()
    assert row == ("7MB", "4s", "UTC")


def test_connections_read_committed_over_a_database_default(admin_url: str) -> None:
    """A database (or role) whose default is REPEATABLE READ: the library's connections still
    run at READ COMMITTED, which its functions' and the event store's checks need (a snapshot
    per statement); the URL's own options still win."""
    name = support.create_database(admin_url, "persistence_rr")
    try:
        url = support.with_database(admin_url, name)
        with psycopg.connect(url, autocommit=True) as plain:
            plain.execute(
                f"ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'"
            )
        with psycopg.connect(url) as plain:
            assert plain.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
        with Database.connect(url) as db, db.pool.connection() as conn:
            assert conn.execute("SHOW transaction_isolation").fetchone() == ("read committed",)
        chosen = make_conninfo(url, options="-c default_transaction_isolation=serializable")
        with Database.connect(chosen) as db, db.pool.connection() as conn:
            assert conn.execute("SHOW transaction_isolation").fetchone() == ("serializable",)
    finally:
        support.drop_database(admin_url, name)


def test_statement_timeout_is_a_typed_error(database_url: str) -> None:
    with (
        Database.connect(database_url, statement_timeout=0.2) as db,
        pytest.raises(DatabaseUnavailable, match="PERSISTENCE_STATEMENT_TIMEOUT"),
        db.transaction() as tx,
    ):
        tx.connection.execute("SELECT pg_sleep(2)")


def test_unreachable_host_is_typed_and_secret_free() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="cannot connect") as caught:
        Database.connect(f"postgresql://bot:{SECRET}@127.0.0.1:{port}/db", connect_timeout=2)
    assert time.monotonic() - started < 5
    assert SECRET not in str(caught.value)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.mark.slow
def test_silent_server_times_out_within_connect_timeout(silent_server: int) -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as caught:
        Database.connect(
            f"postgresql://bot:{SECRET}@127.0.0.1:{silent_server}/db", connect_timeout=2
        )
    # bounded: it gives up at the timeout instead of hanging
    assert time.monotonic() - started < 2 + 3
    assert SECRET not in str(caught.value)


def test_no_log_line_carries_the_password(
    caplog: pytest.LogCaptureFixture, database_url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DatabaseUnavailable):  # retries, logging a warning each time
        Database.connect(f"postgresql://bot:{SECRET}@127.0.0.1:{port}/db", wait=0.5)
    # the test server's own password when its URL has one, else one the server (trust) ignores
    secret = conninfo_to_dict(database_url).get("password") or SECRET
    url = make_conninfo(database_url, password=secret)
    with Database.connect(url) as db:  # the pool logs as it opens
        db.ping()
    assert any("not reachable" in record.getMessage() for record in caplog.records)
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    others = " ".join(str(v) for k, v in conninfo_to_dict(url).items() if k != "password")
    if str(secret) not in others:  # a password equal to the user name shows as the user
        assert all(str(secret) not in record.getMessage() for record in caplog.records)


def test_malformed_url_is_refused_before_connecting() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Database.connect(f"postgresql://bot:{SECRET}@[::1/db")
    assert SECRET not in str(caught.value)


def test_embedded_never_without_url_names_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PERSISTENCE_EMBEDDED", "never")
    with pytest.raises(ConfigurationError, match="set DATABASE_URL"):
        Database.connect()


def test_wrong_password_is_an_authentication_error(scratch_server: Any) -> None:
    with psycopg.connect(scratch_server.admin_url, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute("DROP ROLE IF EXISTS app")
        conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{SECRET}x'")
        hba = conn.execute("SELECT current_setting('hba_file')").fetchone()[0]  # type: ignore[index]
    original = Path(hba).read_text()
    try:
        with open(hba, "w") as file:
            file.write("local all app scram-sha-256\n" + original)
        with psycopg.connect(scratch_server.admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.2)
        url = scratch_server.url("postgres").replace("postgres@", f"app:{SECRET}@")
        with pytest.raises(AuthenticationFailed, match="refused the credentials") as caught:
            Database.connect(url, connect_timeout=2)
        assert SECRET not in str(caught.value)
        right = scratch_server.url("postgres").replace("postgres@", f"app:{SECRET}x@")
        with Database.connect(right) as db:
            db.ping()
    finally:
        with open(hba, "w") as file:
            file.write(original)
        with psycopg.connect(scratch_server.admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


def test_restarted_server_does_not_hand_out_dead_connections(scratch_server: Any) -> None:
    with Database.connect(scratch_server.url("postgres"), min_size=2, acquire_timeout=2) as db:
        db.ping()
        scratch_server.stop()
        with pytest.raises(DatabaseUnavailable):
            db.ping()
        scratch_server.start()
        # the pool's idle connections died with the old server; the next operation still works
        assert db.ping() > 0
        assert db.ping() > 0


def test_connect_waits_for_a_server_that_is_starting(scratch_server: Any) -> None:
    url = scratch_server.url("postgres")
    scratch_server.stop()
    failed: list[BaseException] = []

    def start() -> None:
        try:
            scratch_server.start()
        except BaseException as exc:
            failed.append(exc)

    timer = threading.Timer(1.0, start)
    timer.start()
    try:
        with Database.connect(url, wait=30) as db:
            assert db.ping() > 0
    finally:
        timer.join()
        if failed:  # the cause, rather than 30 s of waiting for a server that never came
            raise failed[0]


@pytest.fixture
def silent_proxy(database_url: str) -> Iterator[SilentProxy]:
    proxy = SilentProxy(database_url)
    yield proxy
    proxy.close()


@pytest.mark.slow
def test_a_silent_network_fails_each_call_within_its_timeout(
    database_url: str, silent_proxy: SilentProxy, open_database: Callable[..., Any]
) -> None:
    """A partition: the server never hears the statement, so only the client can bound it."""
    url = silent_proxy.url(database_url)
    # the connect timeout bounds the pool's refills begun during the silence, which the call
    # after the network heals waits for
    settings = {"operation_timeout": 0.5, "connect_timeout": 1, "min_size": 1, "max_size": 4}
    with open_database(url, **settings) as db:
        stored = db.trades.count()
        silent_proxy.silent = True
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match=r"did not answer within 0\.5 s"):
            db.trades.count()
        assert time.monotonic() - started < 0.5 + 0.5
        started = time.monotonic()
        report = db.health_check(timeout=1)
        assert time.monotonic() - started < 1 + 0.5
        assert report.status == "unhealthy"
        silent_proxy.silent = False
        assert db.trades.count() == stored  # the next call after the network heals succeeds


@pytest.mark.slow
def test_the_health_check_keeps_its_timeout_on_a_silent_network(
    database_url: str, silent_proxy: SilentProxy, open_database: Callable[..., Any]
) -> None:
    with open_database(silent_proxy.url(database_url), min_size=1, connect_timeout=1) as db:
        silent_proxy.silent = True  # the pooled connection is idle and looks fine
        started = time.monotonic()
        report = db.health_check(timeout=1)
        assert time.monotonic() - started < 1 + 0.5
        assert report.status == "unhealthy" and report.error is not None
        assert "did not answer within 1 s" in report.error


def test_session_settings_do_not_leak_to_the_next_borrower(
    database_url: str, open_database: Callable[..., Any]
) -> None:
    with open_database(database_url, min_size=1, max_size=1) as db:
        trade = make_trade()
        db.trades.insert(trade)
        with db.transaction() as tx:
            tx.connection.execute("SET TimeZone = 'Asia/Tokyo'")
            tx.connection.execute("SET statement_timeout = 0")
        saved = db.trades.get(trade.tx_hash, trade.log_index)
        assert saved is not None and saved.created_at is not None
        assert saved.created_at.tzinfo is UTC
        with db.pool.connection() as conn:
            settings = conn.execute(
                "SELECT current_setting('TimeZone'), current_setting('statement_timeout')"
            ).fetchone()
        assert settings == ("UTC", "30s")


def test_rows_decode_to_utc_whatever_the_session_time_zone(
    database_url: str, open_database: Callable[..., Any]
) -> None:
    url = make_conninfo(database_url, options="-c TimeZone=Asia/Tokyo")
    with open_database(url, min_size=1, max_size=1) as db:
        trade = make_trade()
        db.trades.insert(trade)
        with db.pool.connection() as conn:  # past the library: nothing resets this
            conn.execute("SET TimeZone = 'America/New_York'")
        saved = db.trades.get(trade.tx_hash, trade.log_index)
        assert saved is not None and saved.created_at is not None
        assert saved.created_at.tzinfo is UTC
        assert db.trades.list()[0].created_at.tzinfo is UTC  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "says"),
    [({"dbname": "no_such_database_here"}, "database"), ({"user": "no_such_role_here"}, "role")],
)
def test_a_missing_database_or_role_is_named_as_such(
    database_url: str, change: dict[str, str], says: str
) -> None:
    expected = f"the {says} '.*' does not exist"
    if says == "role" and conninfo_to_dict(database_url).get("password"):
        # a server that asks for passwords does not tell a missing role from a wrong password
        expected = "refused the credentials: .*Check the user and password in DATABASE_URL"
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=expected) as caught:
        Database.connect(make_conninfo(database_url, **change), wait=5)
    assert "check that the server is running" not in str(caught.value)
    assert time.monotonic() - started < 2  # final: no retries while the server answers
