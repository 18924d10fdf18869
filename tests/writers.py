"""Writers through one handle while something happens to the servers, then the count.

What the failover scenarios share (tests/failover.py: a primary and a standby promoted by hand;
tests/patroni.py: a Patroni cluster): writers insert trades and record fills through one
Database (threads) or AsyncDatabase (tasks) while ``disrupt`` kills, promotes or stops
servers; then the primary is asked which failed writes had committed anyway, each failed write
is retried once on the same handle, and the primary is read back.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import attrs
import psycopg

from persistence import AsyncDatabase, Database, DatabaseUnavailable, Fill
from tests.factories import make_trade


@attrs.define
class Outcome:
    """What the writers saw, and what the primary holds at the end."""

    api: str
    synchronous: bool
    acknowledged: list[tuple[str, str, float]] = attrs.field(factory=list)  # kind, key, when
    failed: list[tuple[str, str]] = attrs.field(factory=list)  # raised DatabaseUnavailable
    wrong: list[str] = attrs.field(factory=list)  # anything else: a silent None, another error
    killed_at: float = 0.0  # the disruption began
    promoted_at: float = 0.0  # a primary is back (promoted, or its standbys back)
    lost: list[tuple[str, str]] = attrs.field(factory=list)  # acknowledged, not on the primary
    # when no standby was there to confirm: no write may be acknowledged in it
    unconfirmed: tuple[float, float] | None = None
    committed_before_retry: int = 0  # failed writes the primary held before their retry
    retried: dict[str, int] = attrs.field(factory=dict)  # failed writes: rows after one retry

    def saw(self, kind: str, key: str, result: Any, error: BaseException | None) -> bool:
        """Record what one write gave; True when it raised DatabaseUnavailable (back off)."""
        if isinstance(error, DatabaseUnavailable):
            self.failed.append((kind, key))
            return True
        if error is not None:
            self.wrong.append(f"{kind} {key}: {error!r}")
        elif result is None or getattr(result, "trade_id", 0) is None:
            self.wrong.append(f"{kind} {key}: a new write returned {result!r}, silently")
        else:
            self.acknowledged.append((kind, key, time.monotonic()))
        return False

    @property
    def first_write_after_promotion(self) -> float | None:
        after = [when for _, _, when in self.acknowledged if when > self.promoted_at]
        return min(after) - self.promoted_at if after else None

    @property
    def write_gap(self) -> float | None:
        """The longest time without an acknowledged write, from the disruption on (writes
        acknowledged before it count as its start): None if none came after it."""
        times = sorted(when for _, _, when in self.acknowledged)
        if not times or times[-1] <= self.killed_at:
            return None
        start = max([when for when in times if when <= self.killed_at], default=self.killed_at)
        later = [when for when in times if when > self.killed_at]
        return max(b - a for a, b in itertools.pairwise([start, *later]))

    def acknowledged_between(self, start: float, end: float) -> list[str]:
        return [key for _, key, when in self.acknowledged if start < when < end]


def write(db: Any, kind: str, key: str, worker: int) -> Any:
    if kind == "trade":
        return db.trades.insert(make_trade(tx_hash=key))
    fill = Fill(key, 0, f"SYM{worker}", Decimal("0.3"), "BUY", Decimal("150.25"))
    return db.fills.record(fill)


def _keys(worker: int) -> Iterator[tuple[str, str]]:
    for n in itertools.count(1):
        yield ("trade" if n % 2 else "fill"), f"0x{worker:08x}{n:056x}"


def _worker_of(key: str) -> int:
    """The worker whose ``_keys`` made ``key``: a retry must repeat the write exactly (a fill
    recorded again under its key with another symbol is a Conflict, not a retry)."""
    return int(key[2:10], 16)


# the layer's settings for the scenarios: a failed connection attempt gives up within 2 s
DB_SETTINGS: dict[str, Any] = {"min_size": 2, "max_size": 8, "connect_timeout": 2}


def _sync_writers(db: Database, outcome: Outcome, stop: threading.Event, workers: int) -> Any:
    def work(worker: int) -> None:
        for kind, key in _keys(worker):
            if stop.is_set():
                return
            try:
                result, error = write(db, kind, key, worker), None
            except Exception as exc:  # any error but DatabaseUnavailable is what we look for
                result, error = None, exc
            if outcome.saw(kind, key, result, error):
                time.sleep(0.005)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    return threads


class _Handover:
    """The async writers' loop waits, once they stopped, until the main thread has counted
    what committed; then it retries with the same handle."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.counted = threading.Event()


async def _async_writers(
    url: str, outcome: Outcome, stop: threading.Event, workers: int, handover: _Handover
) -> None:
    async with await AsyncDatabase.connect(url, **DB_SETTINGS) as db:

        async def work(worker: int) -> None:
            for kind, key in _keys(worker):
                if stop.is_set():
                    return
                try:
                    result, error = await write(db, kind, key, worker), None
                except Exception as exc:
                    result, error = None, exc
                if outcome.saw(kind, key, result, error):
                    await asyncio.sleep(0.005)

        try:
            await asyncio.gather(*(work(w) for w in range(workers)))
        finally:
            handover.stopped.set()
        await asyncio.to_thread(handover.counted.wait, 120)
        for kind, key in outcome.failed:
            await write(db, kind, key, _worker_of(key))


def run_writers(
    url: str,
    api: str,
    disrupt: Callable[[Outcome], None],
    primary_url: Callable[[], str],
    *,
    synchronous: bool = True,
    workers: int = 4,
) -> Outcome:
    """Writers (``workers`` threads, or twice as many tasks) on ``url`` while ``disrupt`` runs;
    then each failed write is retried once and the primary (``primary_url()``) read back."""
    outcome = Outcome(api, synchronous)
    stop = threading.Event()
    handover = _Handover()
    if api == "sync":
        db = Database.connect(url, **DB_SETTINGS)
        running = _sync_writers(db, outcome, stop, workers)
    else:
        coroutine = _async_writers(url, outcome, stop, workers * 2, handover)
        running = [threading.Thread(target=asyncio.run, args=(coroutine,))]
        running[0].start()
    try:
        disrupt(outcome)
    finally:
        stop.set()
        if api == "sync":
            for thread in running:
                thread.join(60)
        else:
            handover.stopped.wait(60)
        try:
            outcome.committed_before_retry = sum(_stored(primary_url(), outcome.failed).values())
        finally:
            handover.counted.set()
    if api == "sync":
        for kind, key in outcome.failed:
            write(db, kind, key, _worker_of(key))  # inserted now, or found already stored
        db.close()
    else:
        running[0].join(120)
    _read_back(primary_url(), outcome)
    return outcome


def _stored(url: str, keys: list[tuple[str, str]] | None = None) -> dict[str, int]:
    """Rows per tx_hash in trades and onchain_trades (of ``keys`` only, if given)."""
    wanted = None if keys is None else [key for _, key in keys]
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tx_hash, count(*) FROM ("
            "SELECT tx_hash FROM trades UNION ALL SELECT tx_hash FROM onchain_trades) AS t "
            "WHERE %(wanted)s::text[] IS NULL OR tx_hash = ANY(%(wanted)s) GROUP BY tx_hash",
            {"wanted": wanted},
        )
        return dict(rows.fetchall())


def _read_back(url: str, outcome: Outcome) -> None:
    stored = _stored(url)
    outcome.lost = [(kind, key) for kind, key, _ in outcome.acknowledged if key not in stored]
    outcome.retried = {key: stored.get(key, 0) for _, key in outcome.failed}
