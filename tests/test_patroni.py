"""The library on a real Patroni cluster (tests/patroni.py: etcd, three nodes, HAProxy).

Four scenarios on both APIs, writers going through HAProxy's write port as production.md
recommends: the leader's postmaster SIGKILLed; the leader's Patroni SIGKILLed and restarted by
a supervisor that kills the leftover postmaster first; a switchover; both replicas stopped
under ``synchronous_mode_strict``. Each asserts that no acknowledged write is lost, that
nothing but DatabaseUnavailable was raised and no write returned silently, that each failed
write retried leaves exactly one row, and that writes resumed on the same handle. The time to
the first write is measured by ``python -m bench.failover --patroni``, not asserted here.

Then the routes: HAProxy's write and read ports follow Patroni's leader; a read-only handle
on the replicas reports its replay lag; the multi-host URL's limit, a live old primary.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from persistence import Database, DatabaseUnavailable, health_check
from tests.factories import make_trade
from tests.patroni import PatroniCluster, tools
from tests.patroni_scenarios import SCENARIOS, reset, run

pytestmark = [
    pytest.mark.patroni,
    pytest.mark.slow,
    pytest.mark.db,  # servers of its own: not for `-m "not db"`
    pytest.mark.skipif(not tools(), reason="needs patroni, etcd, haproxy and PostgreSQL binaries"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PatroniCluster]:
    """One cluster for the module: each test starts from a healthy one (``reset``)."""
    with PatroniCluster() as built:
        yield built


@pytest.mark.parametrize("api", ["sync", "async"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_acknowledged_write_is_lost(cluster: PatroniCluster, scenario: str, api: str) -> None:
    outcome = run(cluster, scenario, api)
    assert outcome.wrong == []  # no silent None, no error but DatabaseUnavailable
    assert outcome.lost == []  # every acknowledged write is on the leader at the end
    assert set(outcome.retried.values()) <= {1}  # each failed write, retried: exactly one row
    assert any(when < outcome.killed_at for _, _, when in outcome.acknowledged)
    assert outcome.first_write_after_promotion is not None  # the same handle writes again
    if outcome.unconfirmed is not None:  # no standby: nothing acknowledged on one machine
        assert outcome.acknowledged_between(*outcome.unconfirmed) == []


def test_haproxy_routes_writes_to_the_leader_and_reads_to_the_replicas(
    cluster: PatroniCluster,
) -> None:
    reset(cluster)
    leader = cluster.wait_for_leader()
    trade = make_trade()
    with Database.connect(cluster.primary_url()) as db:
        primary = health_check(db)
        trade_id = db.trades.insert(trade)
    # the multi-host URL, asking for a standby: libpq skips the primary
    any_standby = cluster.multi_host_url(cluster.nodes).replace("=read-write", "=standby")
    with Database.connect(any_standby) as standby:
        assert health_check(standby).role == "standby"
    with Database.connect(cluster.replica_url()) as reads:
        replica = health_check(reads)
        # read-your-writes: a synchronous commit is on the standby's disk, not yet replayed
        # (and the other replica is asynchronous): a replica may not show it at once
        deadline = time.monotonic() + 10
        while (found := reads.trades.get(trade.tx_hash, trade.log_index)) is None:
            assert time.monotonic() < deadline, "the write never reached the replica"
            time.sleep(0.05)
        with pytest.raises(DatabaseUnavailable, match="the server is read-only"):
            reads.trades.insert(make_trade())
    assert (primary.role, primary.server) == ("primary", f"127.0.0.1:{leader.pg_port}")
    assert replica.role == "standby" and replica.server != primary.server
    assert replica.replay_lag_bytes is not None and replica.replay_lag_bytes >= 0
    assert found.id == trade_id


def test_a_multi_host_url_keeps_choosing_a_live_old_primary() -> None:
    """The leader's Patroni dies and nothing kills its PostgreSQL: Patroni promotes the
    synchronous standby after the TTL, but the old server still says it is a primary. A
    multi-host URL that lists it first keeps choosing it, and a write there waits for a
    standby that follows the new leader: it raises, never acknowledged; HAProxy, which asks
    Patroni, goes to the new leader."""
    with PatroniCluster() as cluster:
        reset(cluster)
        old = cluster.wait_for_leader()
        others = [node for node in cluster.nodes if node is not old]
        cluster.kill_leader_patroni(supervisor="none")
        new = cluster.wait_for_leader(other_than=old)
        cluster.wait_for_route()
        stranded, routed = make_trade(), make_trade()
        url = cluster.multi_host_url([old, *others])
        with Database.connect(url, operation_timeout=3) as db:
            chosen = health_check(db)
            with pytest.raises(DatabaseUnavailable, match="synchronous standby"):
                db.trades.insert(stranded)
        with Database.connect(cluster.primary_url()) as db:
            through_haproxy = health_check(db)
            db.trades.insert(routed)
        with psycopg.connect(cluster.node_url(new)) as conn:
            on_new = {key for (key,) in conn.execute("SELECT tx_hash FROM trades").fetchall()}
    assert (chosen.role, chosen.server) == ("primary", f"127.0.0.1:{old.pg_port}")
    assert through_haproxy.server == f"127.0.0.1:{new.pg_port}"
    assert routed.tx_hash in on_new and stranded.tx_hash not in on_new
