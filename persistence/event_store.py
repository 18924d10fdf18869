"""The event store's I/O beyond single operations: ``project`` and ``wait_for``, written once
and driven per I/O style.

``wait_for`` listens on a dedicated connection (outside the pool; ``persistence.wakeups``, with
the notifier that wakes it after appends commit), and checks whether an event is readable after
each notification and every ``poll_interval`` seconds: a lost notification (a reconnect,
PgBouncer in transaction mode, a writer in another program, a horizon that moved without an
append) costs latency, never an event.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Generator
from functools import update_wrapper
from typing import Any

from persistence.errors import ValidationError
from persistence.operations import Query
from persistence.operations import event_store as ops
from persistence.repositories import EventStore
from persistence.wakeups import AsyncWakeups, Wakeups

__all__ = ["DEFAULT_POLL_INTERVAL", "drivers"]

# How often wait_for checks for a readable event when no notification comes: the worst-case
# latency when notifications are lost, for one indexed probe per waiter per interval.
DEFAULT_POLL_INTERVAL = 0.5
# After a notification that found no readable event, the first recheck (then doubling).
_FIRST_RECHECK = 0.005
# The least time a check gets for a connection and its answer; past the caller's deadline and
# this, DatabaseUnavailable (with the pool's acquire timeout, a wait_for(timeout=0.5) on a busy
# pool took 10 s: found by a probe).
_CHECK_WITHIN = 1.0


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
        if (yield db.run(check, timeout=max(deadline - time.monotonic(), _CHECK_WITHIN))):
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
            if inspect.isawaitable(result):
                _refuse_awaitable(result)
            result = calls.send(result)
    except StopIteration as done:
        return done.value


def _refuse_awaitable(result: Any) -> None:
    """An ``async def`` handler or reset on the blocking API: its body never ran, so advancing
    the checkpoint past its events would lose them; raised inside the transaction, which rolls
    back."""
    if inspect.iscoroutine(result):
        result.close()  # no "never awaited" warning: the error says it
    raise ValidationError(
        "project's handler (or reset) returned an awaitable on the blocking Database: it was "
        "not run and nothing was handled. Pass a plain function, or use AsyncDatabase, which "
        "awaits it"
    )


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


def _wait_for(db: Any, wakeups: Wakeups, after_position: int, **options: Any) -> bool:
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
    wakeups = (AsyncWakeups if asynchronous else Wakeups)(conninfo)
    project, wait_for = (_aproject, _await_for) if asynchronous else (_project, _wait_for)
    return {
        "appended": wakeups.poke,
        "wakeups": wakeups,
        "project": _bound("project", project, db),
        "wait_for": _bound("wait_for", wait_for, db, wakeups),
    }
