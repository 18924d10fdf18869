"""Run the blocking test suite against AsyncDatabase: every call goes to an event loop thread.

``Bridged(obj)`` forwards attribute access to an object of the async API; a coroutine it gets
back is run on the loop and awaited from the calling thread, an async context manager becomes a
plain one, and objects of the async API come back bridged too. The behavioural tests are then
written once and run on both APIs, each call going through the real async code path.

The loop runs in debug mode with a small ``slow_callback_duration``: asyncio logs every step of
a task that held the loop longer, and ``slow_steps()`` returns those of the current test so
that it can fail on them.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import re
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any

import psycopg
import psycopg_pool

from persistence import AsyncDatabase, Transaction
from persistence.repositories import Repository

# Seconds; asyncio reports any step of a task that took longer. asyncio's own default: with the
# server, the test's other threads (a sync database's pool and notifier) and the loop sharing two
# cores, steps of a few microseconds of work measured 52-64 ms of wall time now and then, in CI
# runs with nothing else on the machine. A blocking call in the layer (a synchronous connect or
# query, a sleep) still shows: a round trip to a stopped or distant server takes far longer.
SLOW_CALLBACK = 0.1
_ASYNC_TYPES = (
    AsyncDatabase,
    Transaction,
    Repository,
    psycopg.AsyncConnection,
    psycopg.AsyncCursor,
    psycopg_pool.AsyncConnectionPool,
)


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        took = re.search(r" took ([0-9.]+) seconds$", message)
        if message.startswith("Executing") and took:
            self.lines.append((float(took.group(1)), message))


class Loop:
    """An event loop in a daemon thread, in debug mode."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_debug(True)
        self.loop.slow_callback_duration = SLOW_CALLBACK
        self.slow = _SlowCallbacks()
        logging.getLogger("asyncio").addHandler(self.slow)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def start_test(self) -> None:
        self.slow.lines.clear()
        # A full collection over the heap that earlier tests built pauses whatever runs (50 ms
        # and more late in the suite): that is the interpreter's pause, not the layer's. The
        # older heap is frozen, so a collection during the test scans this test's objects.
        gc.freeze()

    def slow_steps(self) -> list[str]:
        """The steps of this test's tasks that held the loop too long."""
        gc.unfreeze()
        return [message for took, message in self.slow.lines if took > SLOW_CALLBACK]

    def close(self) -> None:
        logging.getLogger("asyncio").removeHandler(self.slow)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Bridged:
    """A blocking view of an object of the async API."""

    def __init__(self, target: Any, loop: Loop) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_loop", loop)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if callable(value) and not isinstance(value, type):
            return lambda *args, **kwargs: self._wrap(value(*args, **kwargs))
        return self._wrap(value)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __repr__(self) -> str:
        return f"Bridged({self._target!r})"

    def _wrap(self, value: Any) -> Any:
        if inspect.iscoroutine(value):
            value = self._loop.run(value)
        if isinstance(value, _ASYNC_TYPES):
            return Bridged(value, self._loop)
        if hasattr(value, "__aenter__"):
            return _BridgedContext(value, self._loop)
        return value


class _BridgedContext:
    def __init__(self, manager: Any, loop: Loop) -> None:
        self.manager = manager
        self.loop = loop

    def __enter__(self) -> Any:
        return Bridged(None, self.loop)._wrap(self.loop.run(self.manager.__aenter__()))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return bool(self.loop.run(self.manager.__aexit__(exc_type, exc, tb)))


def unbridged(obj: Any) -> Any:
    """The async API's object behind a ``Bridged`` one (a pool's own putconn wants it); any
    other object as it is."""
    return object.__getattribute__(obj, "_target") if isinstance(obj, Bridged) else obj
