"""The examples in the docs run, as written, against the test database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from persistence import Database

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(page: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))


def test_usage_examples_run(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    code = python_blocks(DOCS / "usage.md")
    assert "Database.connect(" in code
    exec(compile(code, str(DOCS / "usage.md"), "exec"), {"__name__": "usage_doc"})  # noqa: S102


def sql_blocks(page: Path) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", ["production.md", "troubleshooting.md"])
def test_sql_in_the_docs_runs(db: Database, page: str) -> None:
    blocks = sql_blocks(DOCS / page)
    assert blocks
    ran = 0
    with db.pool.connection() as conn:
        for block in blocks:
            if "-- requires:" in block:  # an extension the test server need not have
                continue
            conn.execute(block)
            ran += 1
    assert ran == len(blocks) - sum("-- requires:" in b for b in blocks)
