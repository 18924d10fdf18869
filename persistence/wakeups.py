"""The event store's wake-ups: a notifier that sends a ``NOTIFY`` after appends commit, and a
listener that ``wait_for`` waits on (a thread each for ``Database``, tasks for
``AsyncDatabase``; each with a connection of its own, outside the pool).

Why a notifier instead of a NOTIFY in each append: a NOTIFY inside a transaction takes
PostgreSQL's global notify lock from before the commit until its WAL flush, so every appending
commit would wait for the one before it (measured here: 8 writers, 4,300 -> 3,400 events/s).
Instead, when an append commits (autocommit: when its statement returns; in
``db.transaction()``: when the block commits) the library pokes the database's notifier, which
sends one ``NOTIFY`` per burst on a connection of its own (a daemon thread for ``Database``, a
task for ``AsyncDatabase``; started on first use, closed with the database). Under a stream of
appends it sends at most one per gap (each is a transaction: a round trip, CPU on both sides and
a wake-up of the notifier; 8 appending threads on 2 cores lost a quarter of their throughput to
one NOTIFY per 2 ms). The gap is ``_NOTIFY_GAP`` while appends are sparse and widens with their
rate, up to ``_MAX_NOTIFY_GAP`` (``_gap``). It commits the NOTIFY without waiting for its WAL
flush: a notification is never durable, only its timing matters, and the appends it announces
were flushed before they returned.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import psycopg

from persistence.queries.event_store import NOTIFY_CHANNEL

__all__ = ["AsyncWakeups", "Wakeups"]

logger = logging.getLogger(__name__)

# How often the listener thread looks up from its socket to see whether it should stop.
_TICK = 0.2
# After a failed listener or notifier connection, before the next try.
_RETRY = 1.0
# The least time between two NOTIFYs, and the most: what a notification can wait for under a
# stream of appends, sparse and heavy. The gap after a NOTIFY is _GAP_PER_APPEND times the
# appends it announced, within these bounds: from about 2,000 appends a second on, at most one
# NOTIFY per _MAX_NOTIFY_GAP.
_NOTIFY_GAP = 0.002
_MAX_NOTIFY_GAP = 0.010
_GAP_PER_APPEND = 0.0005
# set_config(..., true) is SET LOCAL: it lasts to the commit of this statement (autocommit), so
# the session is left as it was, across PgBouncer in transaction mode too.
_ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true)"
_NOTIFY = f"SELECT {_ASYNC_COMMIT}, pg_notify('{NOTIFY_CHANNEL}', '')"
_LISTEN = f"LISTEN {NOTIFY_CHANNEL}"
# the notifier's and the listener's connections: never a prepared statement (psycopg prepares a
# query run 5 times, and behind PgBouncer in transaction mode it lands on another server
# connection: "prepared statement does not exist", a second of notifications lost each time)
_OWN_CONNECTION: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}


def _gap(announced: int) -> float:
    """The least time before the next NOTIFY, after one that announced ``announced`` appends."""
    return min(_MAX_NOTIFY_GAP, max(_NOTIFY_GAP, announced * _GAP_PER_APPEND))


# --- blocking ------------------------------------------------------------------------------


class Wakeups:
    """A database's notifier and listener threads (each with its own connection)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._lock = threading.Lock()
        self._poked = threading.Event()
        self._pokes = 0  # appends since the last NOTIFY (a count for the gap, not exact)
        self._changed = threading.Condition()
        self.generation = 0
        self._closed = False
        self._notifier: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._listening = threading.Event()

    def _once(self, attribute: str, target: Callable[[], None]) -> None:
        """Start ``target`` in a daemon thread kept in ``attribute``: once, and not once closed."""
        if getattr(self, attribute) is None:
            with self._lock:
                if getattr(self, attribute) is None and not self._closed:
                    thread = threading.Thread(
                        target=target, name=f"persistence{attribute.replace('_', '-')}", daemon=True
                    )
                    setattr(self, attribute, thread)
                    thread.start()

    def poke(self) -> None:
        """An append committed: have the notifier send a NOTIFY (one per burst)."""
        self._once("_notifier", self._notify)
        self._pokes += 1
        # set() takes the event's lock, which 8 appending threads contend for; when it is set
        # already the notifier has not cleared it yet, and its NOTIFY, sent after the clear,
        # covers this append
        if not self._poked.is_set():
            self._poked.set()

    def _notify(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        sent, gap = -_MAX_NOTIFY_GAP, _NOTIFY_GAP
        while True:
            self._poked.wait()
            if (pause := sent + gap - time.monotonic()) > 0 and not self._closed:
                time.sleep(pause)  # the appends meanwhile share the next NOTIFY
            self._poked.clear()  # pokes from here on ask for another NOTIFY: none is lost
            if self._closed:
                break
            sent, gap, self._pokes = time.monotonic(), _gap(self._pokes), 0
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._conninfo, **_OWN_CONNECTION)
                conn.execute(_NOTIFY)
            except psycopg.Error as exc:
                # the waiters' polling covers a lost notification
                logger.warning("event notifier: %s; retrying on the next append", exc)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(_RETRY)
        if conn is not None:
            conn.close()

    def listen(self, wait: float) -> None:
        """Start the listener (once); waits up to ``wait`` s for its LISTEN to be in place."""
        self._once("_listener", self._listen)
        self._listening.wait(wait)

    def _bump(self) -> None:
        with self._changed:
            self.generation += 1
            self._changed.notify_all()

    def _listen(self) -> None:
        while not self._closed:
            try:
                with psycopg.connect(self._conninfo, **_OWN_CONNECTION) as conn:
                    conn.execute(_LISTEN)
                    self._listening.set()
                    self._bump()  # notifications may have been missed before: recheck
                    while not self._closed:
                        for _ in conn.notifies(timeout=_TICK):
                            self._bump()
            except psycopg.Error as exc:
                logger.warning("event listener: %s; waiters poll until it is back", exc)
                self._listening.set()  # do not hold waiters up: they poll
                time.sleep(_RETRY)

    def wait(self, seen: int, timeout: float) -> bool:
        """Until the generation moves past ``seen`` (True) or ``timeout`` seconds pass."""
        with self._changed:
            return self._changed.wait_for(lambda: self.generation != seen, timeout)

    def close(self) -> None:
        self._closed = True
        self._poked.set()
        for thread in (self._notifier, self._listener):
            if thread is not None:
                thread.join(_TICK * 5)


# --- asyncio -------------------------------------------------------------------------------


class AsyncWakeups:
    """``Wakeups`` for asyncio: a notifier task and a listener task, on the database's loop."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._poked: asyncio.Event | None = None
        self._pokes = 0
        self._changed: asyncio.Event | None = None
        self.generation = 0
        self._notifier: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listening: asyncio.Event | None = None
        self._closed = False

    def poke(self) -> None:
        """Called on the loop after an append commits."""
        if self._closed:
            return
        if self._poked is None:
            self._poked = asyncio.Event()
        if self._notifier is None:
            self._notifier = asyncio.get_running_loop().create_task(self._notify())
        self._pokes += 1
        self._poked.set()

    async def _notify(self) -> None:
        assert self._poked is not None
        conn: psycopg.AsyncConnection[Any] | None = None
        sent, gap = -_MAX_NOTIFY_GAP, _NOTIFY_GAP
        try:
            while True:
                await self._poked.wait()
                if (pause := sent + gap - time.monotonic()) > 0:
                    await asyncio.sleep(pause)
                self._poked.clear()
                sent, gap, self._pokes = time.monotonic(), _gap(self._pokes), 0
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(
                            self._conninfo, **_OWN_CONNECTION
                        )
                    await conn.execute(_NOTIFY)
                except psycopg.Error as exc:
                    logger.warning("event notifier: %s; retrying on the next append", exc)
                    if conn is not None:
                        await conn.close()
                    conn = None
                    await asyncio.sleep(_RETRY)
        finally:
            if conn is not None:
                await conn.close()

    async def listen(self, wait: float) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
            self._listening = asyncio.Event()
        if self._listener is None and not self._closed:
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        assert self._listening is not None
        with suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), wait)

    def _bump(self) -> None:
        assert self._changed is not None
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def _listen(self) -> None:
        assert self._listening is not None
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, **_OWN_CONNECTION)
                async with conn:
                    await conn.execute(_LISTEN)
                    self._listening.set()
                    self._bump()
                    async for _ in conn.notifies():
                        self._bump()
            except psycopg.Error as exc:
                logger.warning("event listener: %s; waiters poll until it is back", exc)
                self._listening.set()
                await asyncio.sleep(_RETRY)

    async def wait(self, seen: int, timeout: float) -> bool:
        assert self._changed is not None
        if self.generation != seen:
            return True
        with suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        return self.generation != seen

    async def close(self) -> None:
        self._closed = True
        for task in (self._notifier, self._listener):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError, psycopg.Error):
                    await task
