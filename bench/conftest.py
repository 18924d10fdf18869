"""Benchmark fixtures: the server is chosen as for the tests (``TEST_DATABASE_URL``, else the
embedded one), and every module gets a migrated database of its own, dropped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import sqlalchemy as sa

from bench.baselines import sa_engine, sqlite_connect
from persistence import Database, Trade
from tests.factories import make_trade
from tests.support import admin_url, migrated_database

# Measured runs repeat each benchmark for rounds: the tests' 60 s per-test timeout
# (pyproject.toml) would cut them short; this still ends a hang.
BENCH_TIMEOUT = 600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(BENCH_TIMEOUT))


def make_trades(count: int, **overrides: Any) -> list[Trade]:
    """``count`` distinct valid trades (a new transaction hash every 1,000 log indexes)."""
    made: list[Trade] = []
    while len(made) < count:
        base = make_trade(**overrides)
        made.extend(attrs.evolve(base, log_index=i) for i in range(min(1_000, count - len(made))))
    return made


@pytest.fixture(scope="session")
def admin() -> str:
    return admin_url()


@pytest.fixture(scope="module")
def url(admin: str) -> Iterator[str]:
    with migrated_database(admin, "persistence_bench") as target:
        yield target


@pytest.fixture(scope="module")
def db(url: str) -> Iterator[Database]:
    with Database.connect(url, min_size=4, max_size=8) as database:
        yield database


@pytest.fixture(scope="module")
def raw(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain psycopg connection in autocommit, as a hand-written data layer would hold."""
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def engine(url: str) -> Iterator[sa.Engine]:
    engine = sa_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def sqlite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "bot.db"
    sqlite_connect(path).close()
    return path
