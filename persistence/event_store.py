"""The event store's I/O beyond single operations: ``project`` and ``wait_for``, and the
notifier that wakes waiters after appends commit.

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

``wait_for`` listens on a dedicated connection (outside the pool), and checks whether an event
is readable after each notification and every ``poll_interval`` seconds: a lost notification
(a reconnect, PgBouncer in transaction mode, a writer in another program, a horizon that moved
without an append) costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable, Generator
from contextlib import suppress
from functools import update_wrapper
from typing import Any

import psycopg

from persistence.errors import ValidationError
from persistence.operations import Query
from persistence.operations import event_store as ops
from persistence.queries.event_store import NOTIFY_CHANNEL
from persistence.repositories import EventStore

__all__ = ["DEFAULT_POLL_INTERVAL", "drivers"]

logger = logging.getLogger(__name__)

# How often wait_for checks for a readable event when no notification comes: the worst-case
# latency when notifications are lost, for one indexed probe per waiter per interval.
DEFAULT_POLL_INTERVAL = 0.5
# After a notification that found no readable event, the first recheck (then doubling).
_FIRST_RECHECK = 0.005
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


def _gap(announced: int) -> float:
    """The least time before the next NOTIFY, after one that announced ``announced`` appends."""
    return min(_MAX_NOTIFY_GAP, max(_NOTIFY_GAP, announced * _GAP_PER_APPEND))


def _wait_args(timeout: Any, poll_interval: Any) -> tuple[float, float]:
    for name, value in (("timeout", timeout), ("poll_interval", poll_interval)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise ValidationError(f"{name}={value!r}: must be a number of seconds >= 0")
    if poll_interval == 0:
        raise ValidationError("poll_interval=0: must be > 0 (seconds between checks)")
    return float(timeout), float(poll_interval)


def _handlers(handler: Any, reset: Any) -> None:
    if not callable(handler):
        raise ValidationError(f"handler must be callable as handler(tx, events), not {handler!r}")
    if reset is not None and not callable(reset):
        raise ValidationError(f"reset must be None or callable as reset(tx), not {reset!r}")


class _Pause:
    """How long wait_for waits before its next check.

    ``poll_interval`` normally. After a notification that found nothing readable (the append
    committed, but a write transaction elsewhere still holds the horizon below it), checks come
    sooner, doubling from ``_FIRST_RECHECK``, until they reach ``poll_interval`` again: the
    event becomes readable the moment that transaction ends, and no notification says so.
    """

    __slots__ = ("_backoff", "_poll")

    def __init__(self, poll_interval: float) -> None:
        self._poll = poll_interval
        self._backoff: float | None = None

    def next(self) -> float:
        if self._backoff is None:
            return self._poll
        pause = min(self._backoff, self._poll)
        self._backoff = None if self._backoff >= self._poll else self._backoff * 2
        return pause

    def woken(self, notified: bool) -> None:
        if notified:
            self._backoff = _FIRST_RECHECK


# --- blocking ------------------------------------------------------------------------------


class _Wakeups:
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
                    conn = psycopg.connect(self._conninfo, autocommit=True)
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
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
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


class _AsyncWakeups:
    """``_Wakeups`` for asyncio: a notifier task and a listener task, on the database's loop."""

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
                            self._conninfo, autocommit=True
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
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
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


# --- the drivers, written once: each I/O call's result is a value on the blocking API and an
# awaitable on asyncio, which _drive and _adrive resolve ------------------------------------

Calls = Generator[Any, Any, Any]


def _plan(name: str, handler: Any, reset: Any, options: dict[str, Any]) -> ops.Plan:
    """``project``'s arguments checked, before a connection is borrowed; the batch's plan."""
    steps = ops.project(name, **options)
    _handlers(handler, reset)
    return steps


def _projecting(tx: Any, steps: ops.Plan, handler: Any, reset: Any) -> Calls:
    """``project``'s batch in the transaction ``tx``: the plan's statements on its connection,
    the user's ``handler`` and ``reset`` where the plan says."""
    reply: Any = None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration as done:
            return int(done.value)
        if isinstance(step, ops.Handle):
            reply = yield handler(tx, step.events)
        elif isinstance(step, ops.Reset):
            reply = yield None if reset is None else reset(tx)
        else:
            assert isinstance(step, Query)
            reply = yield tx.run(step)  # on the block's connection; our errors only


def _waiting(
    db: Any,
    wakeups: Any,
    after_position: int,
    *,
    timeout: float,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
) -> Calls:
    """``wait_for``: check, then wait for a notification or the next poll, until the deadline."""
    check = ops.readable_after(after_position)
    timeout, poll_interval = _wait_args(timeout, poll_interval)
    deadline = time.monotonic() + timeout
    yield wakeups.listen(min(timeout, db.settings.connect_timeout))
    pause = _Pause(poll_interval)
    while True:
        seen = wakeups.generation  # read before the check: a notification after it wakes us
        if (yield db.run(check)):
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        pause.woken((yield wakeups.wait(seen, min(pause.next(), remaining))))


def _drive(calls: Calls) -> Any:
    """Run ``calls`` on the blocking API: each call's value is its result."""
    try:
        result = next(calls)
        while True:
            result = calls.send(result)
    except StopIteration as done:
        return done.value


async def _adrive(calls: Calls) -> Any:
    """Run ``calls`` on asyncio: awaitables are awaited (a user's handler may be either)."""
    result = None
    try:
        while True:
            value = calls.send(result)
            result = await value if inspect.isawaitable(value) else value
    except StopIteration as done:  # only send raises it: PEP 479 turns an await's into an error
        return done.value


def _project(db: Any, name: str, handler: Any, *, reset: Any = None, **options: Any) -> int:
    steps = _plan(name, handler, reset, options)
    with db.transaction() as tx:
        return int(_drive(_projecting(tx, steps, handler, reset)))


async def _aproject(db: Any, name: str, handler: Any, *, reset: Any = None, **options: Any) -> int:
    steps = _plan(name, handler, reset, options)
    async with db.transaction() as tx:
        return int(await _adrive(_projecting(tx, steps, handler, reset)))


def _wait_for(db: Any, wakeups: _Wakeups, after_position: int, **options: Any) -> bool:
    return bool(_drive(_waiting(db, wakeups, after_position, **options)))


async def _await_for(db: Any, wakeups: Any, after_position: int, **options: Any) -> bool:
    return bool(await _adrive(_waiting(db, wakeups, after_position, **options)))


# --- wiring --------------------------------------------------------------------------------


def _bound(name: str, driver: Callable[..., Any], *first: Any) -> Callable[..., Any]:
    def method(*args: Any, **kwargs: Any) -> Any:
        return driver(*first, *args, **kwargs)

    # the public signature and docstring: EventStore's declaration of the method
    return update_wrapper(method, EventStore.__dict__[name].build)


def drivers(db: Any, conninfo: str) -> dict[str, Any]:
    """What ``db`` (a Database or an AsyncDatabase) binds its ``EventStore`` with: the notifier
    its appends poke (``appended``, ``wakeups``; the database closes it) and the drivers of
    ``project`` and ``wait_for`` in its I/O style."""
    asynchronous = inspect.iscoroutinefunction(db.run)
    wakeups = (_AsyncWakeups if asynchronous else _Wakeups)(conninfo)
    project, wait_for = (_aproject, _await_for) if asynchronous else (_project, _wait_for)
    return {
        "appended": wakeups.poke,
        "wakeups": wakeups,
        "project": _bound("project", project, db),
        "wait_for": _bound("wait_for", wait_for, db, wakeups),
    }
