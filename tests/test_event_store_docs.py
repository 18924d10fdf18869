"""docs/event-store.md: its Python blocks run as written, in order, against the test database,
and its SQL blocks run too."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.event_store_support import store_url

__all__ = ["store_url"]

PAGE = Path(__file__).resolve().parents[1] / "docs" / "event-store.md"


@pytest.fixture
def clean_read_model(store_url: str) -> Iterator[str]:
    yield store_url
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS account_balances")


def test_the_event_store_examples_run(
    clean_read_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", clean_read_model)
    code = "\n".join(re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S))
    assert "project(" in code and "version=2" in code
    exec(compile(code, str(PAGE), "exec"), {"__name__": "event_store_doc"})  # noqa: S102


def test_the_event_store_sql_runs(store_url: str) -> None:
    blocks = re.findall(r"```sql\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) == 3
    with psycopg.connect(store_url) as conn:
        for block in blocks:
            conn.execute(block).fetchall()
