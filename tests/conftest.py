"""Test harness: a real PostgreSQL, a throwaway database per worker, emptied between tests.

The server is ``TEST_DATABASE_URL`` (an admin URL allowed to create databases) or else the
embedded one. Each worker creates its own database, migrated to the newest schema, and drops it
at the end: the user's data is never touched. Between tests the tables are emptied
(``support.EMPTY_ALL``, 0.2 ms); a rollback per test cannot cover tests that use several
connections or commit on purpose.

Tests that need no server (models, queries, config) run anywhere: ``pytest -m "not db"``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo
from xdist.scheduler import LoadGroupScheduling

from persistence import AsyncDatabase, Database
from tests import support
from tests.bridge import Bridged, Loop
from tests.support import create_database, drop_database, with_database

DB_FIXTURES = {
    "admin_url",
    "database_url",
    "db",
    "empty_database_url",
    "emptied_url",
    "scratch_server",
    "scratch_url",
    "ssl_server",
}


# The tests read no setting from the caller's environment (a sourced .env.example, a production
# shell), only TEST_DATABASE_URL and TEST_DATABASE_PROXY: these are cleared for the whole run.
# libpq's SSL variables too, as Settings reads them.
AMBIENT = ("DATABASE_URL", "PERSISTENCE_*", "PGSSLMODE", "PGSSLROOTCERT")


@pytest.fixture(scope="session", autouse=True)
def _no_ambient_settings() -> Iterator[None]:
    """Clear the caller's settings; every database the tests open seals tokens with the tests'
    keyring, unless a test says otherwise. Subprocesses inherit the same environment."""
    prefixes = tuple(name[:-1] for name in AMBIENT if name.endswith("*"))
    saved = {
        name: value
        for name, value in os.environ.items()
        if name in AMBIENT or name.startswith(prefixes)
    }
    for name in saved:
        del os.environ[name]
    os.environ["PERSISTENCE_TOKEN_KEYS"] = support.TEST_TOKEN_KEYS
    if os.environ.get("TEST_DATABASE_PROXY"):
        # a PgBouncer before 1.21 in transaction mode cannot carry server-side prepared
        # statements (docs/production.md): the proxy's own setting, not the caller's
        os.environ["PERSISTENCE_PREPARE_THRESHOLD"] = "none"
    yield
    os.environ.pop("PERSISTENCE_TOKEN_KEYS", None)
    os.environ.pop("PERSISTENCE_PREPARE_THRESHOLD", None)
    os.environ.update(saved)


# In CI every test must run: a skip there means a missing tool, and a green run would hide it.
STRICT = os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"


# A test on a server of its own starts, stops or reconfigures it: seconds, not milliseconds.
OWN_SERVER_FIXTURES = {"scratch_server", "scratch_url", "ssl_server"}


# The per-test timeout (pyproject.toml: 60 s) for the slow tests: seconds by design, so a
# generous bound, which still ends a hang.
SLOW_TIMEOUT = 600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in support.HORIZON_MODULES:
            item.add_marker(pytest.mark.xdist_group("horizon"))
        fixtures = set(getattr(item, "fixturenames", ()))
        if DB_FIXTURES & fixtures:
            item.add_marker(pytest.mark.db)
        if OWN_SERVER_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


class HorizonScheduling(LoadGroupScheduling):
    """xdist's load scheduling, with the "horizon" group (``support.HORIZON_MODULES``) on one
    worker, one test at a time; every other test is a unit of its own, spread as ``load`` does.

    By module, in the controller, which sees nodeids only: xdist's own ``xdist_group`` marks do
    not group here (its workers append "@group" to ``item._nodeid``, which pytest 9.2 no longer
    reads: it keeps ``item._id``), and its ``--dist loadgroup`` in addopts would disable
    pytest-benchmark in ``bench/``, which shares them. An "@group" suffix is honoured still.
    """

    def _split_scope(self, nodeid: str) -> str:
        if nodeid.split("::", 1)[0].rsplit("/", 1)[-1] in support.HORIZON_MODULES:
            return "horizon"
        return super()._split_scope(nodeid)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # `-n 2` means --dist load; tryfirst: before xdist's own answer
    if config.getvalue("dist") in ("load", "loadgroup"):
        return HorizonScheduling(config, log)
    return None


@pytest.fixture(scope="session")
def admin_url() -> str:
    return support.admin_url()


@pytest.fixture(scope="session")
def database_url(admin_url: str) -> Iterator[str]:
    """A database of this run's own, migrated to the newest schema.

    With ``TEST_DATABASE_PROXY=HOST:PORT`` (a PgBouncer in front of the same server) it is
    created and migrated directly, and the tests reach it through the proxy.
    """
    with support.migrated_database(admin_url, "persistence_test") as url:
        proxy = os.environ.get("TEST_DATABASE_PROXY")
        if not proxy:
            yield url
            return
        support.set_session_defaults(url)
        host, port = proxy.rsplit(":", 1)
        yield make_conninfo(url, host=host, port=port)


@pytest.fixture(scope="session")
def _session_db(database_url: str) -> Iterator[Database]:
    with Database.connect(database_url, max_size=16) as db:
        yield db


@pytest.fixture(scope="session")
def loop() -> Iterator[Loop]:
    """The event loop of the async API's tests, in its own thread, in debug mode."""
    running = Loop()
    yield running
    running.close()


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest, loop: Loop) -> Iterator[str]:
    """Each behavioural test runs on both APIs; an async run fails on a slow loop callback."""
    loop.start_test()
    yield request.param
    slow = loop.slow_steps()
    # A sync run drives no task on the loop: a slow step then is a leftover background timer
    # waiting for the GIL behind the sync test's own threads, not the layer holding the loop.
    assert request.param == "sync" or not slow, f"the layer held the event loop: {slow}"


@pytest.fixture
def open_database(api: str, loop: Loop) -> Callable[..., AbstractContextManager[Any]]:
    """``Database.connect`` on the API under test: ``with open_database(url, **settings) as db``."""

    @contextmanager
    def connect(url: str | None = None, **settings: Any) -> Iterator[Any]:
        if api == "sync":
            with Database.connect(url, **settings) as db:
                yield db
            return
        db = loop.run(AsyncDatabase.connect(url, **settings))
        try:
            yield Bridged(db, loop)
        finally:
            loop.run(db.close())

    return connect


@pytest.fixture(scope="session")
def _session_async_db(database_url: str, loop: Loop) -> Iterator[Any]:
    db = loop.run(AsyncDatabase.connect(database_url, max_size=16))
    yield Bridged(db, loop)
    loop.run(db.close())


@pytest.fixture
def emptied_url(database_url: str, _session_db: Database) -> str:
    """The test database, emptied, for a test that reaches it through connections of its own."""
    with _session_db.pool.connection() as conn:
        conn.execute(support.EMPTY_ALL)
    return database_url


@pytest.fixture
def db(api: str, emptied_url: str, _session_db: Database, _session_async_db: Any) -> Any:
    """The test database, emptied, on the API under test (the async one bridged)."""
    return _session_db if api == "sync" else _session_async_db


@pytest.fixture(scope="session")
def _empty_database(admin_url: str) -> Iterator[str]:
    name = create_database(admin_url, "persistence_empty")
    yield name
    drop_database(admin_url, name)


@pytest.fixture
def empty_database_url(admin_url: str, _empty_database: str) -> str:
    """An empty database (no schema), as new: this worker's own, made new for each test."""
    support.make_new(admin_url, _empty_database)
    return with_database(admin_url, _empty_database)


@pytest.fixture(scope="session")
def scratch_server() -> Iterator[Any]:
    """A throwaway embedded cluster that tests may stop, start and reconfigure.

    Its folder is its own, not pytest's: a pytest run started meanwhile on the machine resets
    /tmp/pytest-of-<user> to mode 0700, which shuts the server's own system user out of it."""
    from persistence.embedded import EmbeddedServer

    base = Path(tempfile.mkdtemp(prefix="persistence-scratch-"))
    try:
        server = EmbeddedServer(base / "pgdata").start()
        yield server
        server.stop(mode="immediate")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def scratch_url(scratch_server: Any) -> Iterator[str]:
    """A migrated database on the throwaway cluster, for tests that stop or kill the server."""
    scratch_server.start()  # a previous test may have left it stopped
    with support.migrated_database(scratch_server.admin_url, "persistence_fault") as url:
        yield url
        scratch_server.start()
