"""Failover figures: time to the first write, and acknowledged writes lost.

    python -m bench.failover [--runs 5]
    python -m bench.failover --patroni [--runs 5]

Without --patroni, each run starts a primary and a hot standby (tests/failover.py), has writers
insert trades and record fills through one Database (4 threads) or AsyncDatabase (8 tasks) on
the multi-host URL, SIGKILLs the primary after 1 s, promotes the standby, lets the writers carry
on for 1.5 s, then retries each failed write once and reads the new primary.

With --patroni, one Patroni cluster (tests/patroni.py: etcd, three nodes, HAProxy) runs the
four scenarios of tests/patroni_scenarios.py, and production.md's trap (Patroni started again
beside its live PostgreSQL once the standby was promoted), ``--runs`` times on each API, the
writers going through HAProxy's write port. It counts the failed writes that had committed
(found on the leader before their retry), and times the longest write gap from the disruption
on and the first write once HAProxy routes to a leader again. Printed as Markdown tables.
"""

from __future__ import annotations

import argparse
import statistics

from tests.failover import Cluster, run_scenario
from tests.writers import Outcome


def _median_max(values: list[float | None]) -> str:
    measured = [v for v in values if v is not None]
    if len(measured) < len(values):
        return f"no write after it in {len(values) - len(measured)} run(s)"
    return f"{statistics.median(measured) * 1000:,.0f} ms ({max(measured) * 1000:,.0f} ms)"


def _counts(outcomes: list[Outcome]) -> str:
    rows_per_retry = sorted({n for o in outcomes for n in o.retried.values()})
    return (
        f"{sum(len(o.acknowledged) for o in outcomes):,} | "
        f"{sum(len(o.failed) for o in outcomes):,} | "
        f"{sum(len(o.wrong) for o in outcomes)} | "
        f"{sum(len(o.lost) for o in outcomes)} | {rows_per_retry}"
    )


def streaming(runs: int) -> None:
    print(
        "| replication | API | runs | acknowledged | failed (raised) | wrong | lost "
        "acknowledged | retried: rows per write | promotion to first write, median (max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for synchronous in (True, False):
        for api in ("sync", "async"):
            outcomes = []
            for _ in range(runs):
                with Cluster(synchronous=synchronous) as cluster:
                    outcomes.append(run_scenario(cluster, api))
            firsts = [o.first_write_after_promotion for o in outcomes]
            print(
                f"| {'synchronous' if synchronous else 'asynchronous'} | {api} | {runs} | "
                f"{_counts(outcomes)} | {_median_max(firsts)} |",
                flush=True,
            )


def patroni(runs: int) -> None:
    from tests.patroni import PatroniCluster
    from tests.patroni_scenarios import SCENARIOS, TRAP, run

    print(
        "| scenario | API | runs | acknowledged | failed (raised) | wrong | lost acknowledged | "
        "retried: rows per write | failed but committed | longest write gap, median (max) | "
        "leader routed to first write, median (max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    with PatroniCluster() as cluster:
        for scenario in (*SCENARIOS, TRAP):
            for api in ("sync", "async"):
                outcomes = [run(cluster, scenario, api) for _ in range(runs)]
                unconfirmed = sum(
                    len(o.acknowledged_between(*o.unconfirmed))
                    for o in outcomes
                    if o.unconfirmed is not None
                )
                note = f" ({unconfirmed} acknowledged with no standby)" if unconfirmed else ""
                print(
                    f"| {scenario} | {api} | {runs} | {_counts(outcomes)} | "
                    f"{sum(o.committed_before_retry for o in outcomes)}{note} | "
                    f"{_median_max([o.write_gap for o in outcomes])} | "
                    f"{_median_max([o.first_write_after_promotion for o in outcomes])} |",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.failover",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--patroni", action="store_true", help="the four scenarios on a Patroni cluster"
    )
    args = parser.parse_args()
    (patroni if args.patroni else streaming)(args.runs)


if __name__ == "__main__":
    main()
