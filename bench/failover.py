"""Failover figures: time from promotion to the first write, and writes lost without sync.

    python -m bench.failover [--runs 5]

Each run starts a primary and a hot standby (tests/failover.py), has writers insert trades and
record fills through one Database (4 threads) or AsyncDatabase (8 tasks) on the multi-host URL,
SIGKILLs the primary after 1 s, promotes the standby, lets the writers carry on for 1.5 s, then
retries each failed write once and reads the new primary. Printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics

from tests.failover import Cluster, run_scenario


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(
        "| replication | API | runs | acknowledged | failed (raised) | wrong | lost "
        "acknowledged | retried: rows per write | promotion to first write, median (max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for synchronous in (True, False):
        for api in ("sync", "async"):
            outcomes = []
            for _ in range(args.runs):
                with Cluster(synchronous=synchronous) as cluster:
                    outcomes.append(run_scenario(cluster, api))
            firsts = [o.first_write_after_promotion for o in outcomes]
            measured = [f for f in firsts if f is not None]
            rows_per_retry = sorted({n for o in outcomes for n in o.retried.values()})
            print(
                f"| {'synchronous' if synchronous else 'asynchronous'} | {api} | {args.runs} | "
                f"{sum(len(o.acknowledged) for o in outcomes):,} | "
                f"{sum(len(o.failed) for o in outcomes):,} | "
                f"{sum(len(o.wrong) for o in outcomes)} | "
                f"{sum(len(o.lost) for o in outcomes)} | {rows_per_retry} | "
                + (
                    f"{statistics.median(measured) * 1000:.0f} ms ({max(measured) * 1000:.0f} ms)"
                    if len(measured) == len(firsts)
                    else f"no write after promotion in {len(firsts) - len(measured)} run(s)"
                )
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
