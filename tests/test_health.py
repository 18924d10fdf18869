"""Health reports and the probe CLI: healthy, degraded and unhealthy, each within its timeout."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from persistence import Database, health_check
from persistence.migrate import load_migrations
from tests.support import environment_without, every_connection_busy

SHIPPED = load_migrations()
LATEST = SHIPPED[-1].version


def probe(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = environment_without("DATABASE_URL")
    return subprocess.run(
        [sys.executable, "-m", "persistence.health", "--database-url", url, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_a_migrated_database_is_healthy(db: Database) -> None:
    report = health_check(db, timeout=2)
    assert report.status == "healthy", report
    assert report.error is None
    assert report.pending_migrations == 0 and report.drift == ()
    assert report.schema_version == report.latest_migration == LATEST
    assert report.latency_ms is not None and report.latency_ms > 0
    assert report.server_version and report.database
    assert report.pool["max_size"] == db.settings.max_size


def test_a_database_behind_the_code_is_degraded(empty_database_url: str) -> None:
    with Database.connect(empty_database_url) as db:
        report = health_check(db)
    assert report.status == "degraded"
    assert report.pending_migrations == len(SHIPPED) and report.schema_version is None
    assert report.error == f"{len(SHIPPED)} migration(s) pending"


def test_a_closed_database_is_unhealthy(database_url: str) -> None:
    db = Database.connect(database_url)
    db.close()
    assert health_check(db).status == "unhealthy"


def test_an_exhausted_pool_is_reported_without_queueing(database_url: str) -> None:
    with (
        Database.connect(database_url, min_size=1, max_size=1, acquire_timeout=5) as db,
        every_connection_busy(db),
    ):
        started = time.monotonic()
        report = health_check(db, timeout=5)
        elapsed = time.monotonic() - started
    assert report.status == "degraded"
    assert report.error is not None and "pool is exhausted" in report.error
    assert elapsed < 1  # it did not queue for the 5 s timeout


def test_cli_healthy_degraded_and_unhealthy_exit_codes(
    database_url: str, empty_database_url: str, scratch_server: Any
) -> None:
    healthy = probe(database_url, "--json", "--timeout", "3")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert '"status": "healthy"' in healthy.stdout

    behind = probe(empty_database_url, "--timeout", "3")
    assert behind.returncode == 3
    assert "status: degraded" in behind.stdout
    assert f"pending_migrations: {len(SHIPPED)}" in behind.stdout

    scratch_server.start()
    url = scratch_server.url("postgres")
    scratch_server.stop()
    try:
        started = time.monotonic()
        down = probe(url, "--timeout", "2")
        assert down.returncode == 1
        assert "status: unhealthy" in down.stdout and "cannot connect" in down.stdout
        assert time.monotonic() - started < 2 + 5  # interpreter start-up plus the timeout
    finally:
        scratch_server.start()


def test_cli_refuses_a_bad_url_as_usage() -> None:
    result = probe("mysql://x@y/z")
    assert result.returncode == 2 and "unsupported scheme" in result.stderr
