"""Failover on PostgreSQL streaming replication: a primary and a hot standby on loopback.

The primary is SIGKILLed mid-write and the standby promoted; the same Database / AsyncDatabase
handle carries on. With synchronous replication every acknowledged write must be on the new
primary, every write that did not complete must have raised DatabaseUnavailable, and a retry of
it must leave exactly one row. Five runs per API. The figures (time from promotion to the first
write, acknowledged writes lost under asynchronous replication) are measured by
``python -m bench.failover``, not asserted here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from persistence import Database, Settings, health_check
from persistence.import_sqlite import import_sqlite
from tests import bot_store
from tests.failover import Cluster, binaries, run_scenario

pytestmark = [
    pytest.mark.failover,
    pytest.mark.slow,
    pytest.mark.db,  # servers of its own: not for `-m "not db"`
    pytest.mark.skipif(binaries() is None, reason="needs initdb, pg_ctl and pg_basebackup"),
]


@pytest.mark.parametrize("run", range(1, 6))
@pytest.mark.parametrize("api", ["sync", "async"])
def test_no_acknowledged_write_is_lost_with_synchronous_replication(api: str, run: int) -> None:
    with Cluster(synchronous=True) as cluster:
        outcome = run_scenario(cluster, api, before=0.6, after=0.8)
    assert outcome.wrong == []  # no silent None, no error but DatabaseUnavailable
    assert outcome.lost == []  # every acknowledged write is on the new primary
    assert set(outcome.retried.values()) <= {1}  # each failed write, retried: exactly one row
    assert outcome.failed, "the kill interrupted no write: the scenario tested nothing"
    # the same handle wrote before the kill and after the promotion
    assert any(when < outcome.killed_at for _, _, when in outcome.acknowledged)
    assert outcome.first_write_after_promotion is not None


def test_asynchronous_replication_raises_or_acknowledges_never_silently() -> None:
    """Asynchronous: acknowledged writes may be lost (measured, not asserted); still no silent
    failure, and a retry leaves exactly one row."""
    with Cluster(synchronous=False) as cluster:
        outcome = run_scenario(cluster, "sync", before=0.6, after=0.8)
    assert outcome.wrong == []
    assert set(outcome.retried.values()) <= {1}
    assert outcome.first_write_after_promotion is not None


def test_health_says_primary_or_standby_and_the_lag(tmp_path: Path) -> None:
    with Cluster(synchronous=False) as cluster:
        settings = Settings.from_env(url=cluster.url())
        from persistence import migrate

        migrate.apply(settings)
        with Database.connect(cluster.url()) as db:
            primary = health_check(db)
        with Database.connect(cluster.node_url(1)) as standby_db:
            standby = health_check(standby_db)
        # the import and a multi-host URL: through to the primary
        path = bot_store.write(tmp_path / "bot.db", [bot_store.row(1)])
        assert import_sqlite(path, settings).trades_inserted == 1
    assert (primary.status, primary.role) == ("healthy", "primary")
    assert primary.server == f"127.0.0.1:{cluster.ports[0]}"
    assert primary.replay_lag_bytes is None and primary.replay_lag_seconds is None
    assert standby.role == "standby" and standby.server == f"127.0.0.1:{cluster.ports[1]}"
    assert standby.replay_lag_bytes is not None and standby.replay_lag_bytes >= 0


def test_the_cluster_is_removed_on_every_path() -> None:
    with pytest.raises(RuntimeError, match="boom"), Cluster(synchronous=True) as cluster:
        base = cluster.base
        assert base.exists()
        raise RuntimeError("boom")
    assert not base.exists()
