"""Statements are built once, with placeholders only: no server needed."""

from __future__ import annotations

import re

import attrs

from persistence import Trade, queries
from persistence.tables import TRADE_COLUMNS

PLACEHOLDER = re.compile(r"%\([a-z_]+\)s")


def test_no_statement_has_a_stray_percent_sign() -> None:
    # psycopg would read a literal % as a placeholder; PyPika does not escape them
    for name, statement in queries.statements().items():
        assert "%" not in PLACEHOLDER.sub("", statement), name


def test_statements_are_built_once() -> None:
    args = {
        "status": "PENDING",
        "ticker": None,
        "since": None,
        "until": None,
        "limit": 10,
        "after_id": 0,
    }
    first, _ = queries.list_trades(**args)
    second, params = queries.list_trades(**args)
    assert first is second
    assert params["status"] == "PENDING"
    assert '"status"=%(status)s' in first and "schwab_ticker" not in first.split("WHERE")[1]


def test_values_are_never_inlined() -> None:
    assert "VALUES (%(tx_hash)s,%(log_index)s" in queries.INSERT_TRADE
    assert 'ON CONFLICT ("tx_hash", "log_index") DO NOTHING RETURNING "id"' in queries.INSERT_TRADE
    assert '"id"' not in queries.INSERT_TRADE.split("VALUES")[0]
    assert '"id"' in queries.INSERT_TRADE_WITH_ID.split("VALUES")[0]


def test_columns_follow_the_model() -> None:
    assert tuple(field.name for field in attrs.fields(Trade)) == TRADE_COLUMNS


def test_printing_the_statements_warns_of_nothing() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "persistence.queries"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert "-- INSERT_TRADE\nINSERT INTO" in done.stdout
