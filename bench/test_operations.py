"""Status updates, the health check, and the migration runner with nothing to do."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from bench.conftest import make_trades
from persistence import Database, health_check, queries

UPDATE_ROUNDS = 1_000


@pytest.mark.parametrize("variant", ["persistence", "raw_psycopg"])
def test_update_status(benchmark: Any, variant: str, db: Database, raw: Any) -> None:
    """Complete one pending trade (PENDING -> COMPLETED with its order id)."""
    benchmark.group = "update_status"
    trades = make_trades(UPDATE_ROUNDS + 10)
    db.trades.insert_many(trades)
    keys = iter([(t.tx_hash, t.log_index) for t in trades])
    if variant == "persistence":

        def complete(tx_hash: str, log_index: int) -> Any:
            return db.trades.update_status(tx_hash, log_index, "COMPLETED", schwab_order_id="O1")

    else:

        def complete(tx_hash: str, log_index: int) -> Any:
            params = {
                "tx_hash": tx_hash,
                "log_index": log_index,
                "status": "COMPLETED",
                "schwab_order_id": "O1",
                "schwab_price_per_share_cents": None,
            }
            return raw.execute(queries.UPDATE_TRADE_STATUS, params).fetchone()

    benchmark.pedantic(
        complete, setup=lambda: (next(keys), {}), rounds=UPDATE_ROUNDS, warmup_rounds=10
    )


@pytest.mark.parametrize("variant", ["persistence"])
def test_health_check(benchmark: Any, variant: str, db: Database) -> None:
    """A full health report on a warm pool."""
    benchmark.group = "health_check"
    report = benchmark(health_check, db)
    assert report.status == "healthy"


@pytest.mark.parametrize("variant", ["persistence"])
def test_migrate_noop(benchmark: Any, variant: str, url: str) -> None:
    """`python -m persistence.migrate` on an up-to-date database: a new process, wall time."""
    benchmark.group = "migrate_noop"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    command = [sys.executable, "-m", "persistence.migrate", "--database-url", url]
    result = benchmark.pedantic(
        subprocess.run,
        args=(command,),
        kwargs={"capture_output": True, "text": True, "env": env},
        rounds=5,
    )
    assert "nothing to do" in result.stdout
