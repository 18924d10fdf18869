"""Repositories: the public methods, each bound to one operation and run by the owner's runner.

A repository class is written once for both APIs. ``db.trades.get(...)`` on a ``Database``
returns the trade; on an ``AsyncDatabase`` it returns an awaitable of it. Each method is the
operation builder of ``persistence.operations`` (its signature and docstring) handed to the
runner of the database or transaction it belongs to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from functools import partial, update_wrapper
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from persistence.event_models import RecordedEvent
from persistence.operations import Operation, Steps
from persistence.operations import accumulators as accumulator_ops
from persistence.operations import auth as auth_ops
from persistence.operations import event_store as event_store_ops
from persistence.operations import events as event_ops
from persistence.operations import executions as execution_ops
from persistence.operations import fills as fill_ops
from persistence.operations import trades as trade_ops
from persistence.tokens import Keyring

__all__ = [
    "AccumulatorRepository",
    "Async",
    "Checkpoints",
    "EventQueue",
    "EventStore",
    "ExecutionRepository",
    "FillRepository",
    "Repository",
    "SchwabAuthRepository",
    "Sync",
    "TradeRepository",
    "TransactionEventQueue",
    "TransactionEventStore",
]

P = ParamSpec("P")
T = TypeVar("T")
Run = Callable[[Operation[Any]], Any]


class Sync:
    """Marks a repository whose methods return their result."""


class Async:
    """Marks a repository whose methods return an awaitable of their result."""


M = TypeVar("M", Sync, Async)


class Repository(Generic[M]):
    """Binds each ``operation`` of the class to ``run``, once, when the repository is made.

    ``context`` holds what some operations need from their database besides the connection
    (the token keyring), passed to them by keyword.
    """

    def __init__(self, run: Run, **context: Any) -> None:
        for cls in type(self).__mro__:
            for name, member in vars(cls).items():
                if isinstance(member, operation) and name not in self.__dict__:
                    self.__dict__[name] = member.bind(run, context)


class operation(Generic[P, T]):
    """A repository method that runs the operation ``build`` returns."""

    def __init__(self, build: Callable[P, Operation[T]]) -> None:
        self.build: Callable[..., Operation[T]] = build
        self.name = build.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def bind(self, run: Run, context: dict[str, Any]) -> Callable[P, Any]:
        build = self._builder(context)

        def method(*args: P.args, **kwargs: P.kwargs) -> Any:
            return run(build(*args, **kwargs))

        return update_wrapper(method, self.build)

    def _builder(self, context: dict[str, Any]) -> Callable[..., Operation[T]]:
        return self.build

    # Repository.__init__ puts the bound method in the instance, so this runs only for typing
    # and for access through the class.
    @overload
    def __get__(self, obj: None, owner: Any) -> operation[P, T]: ...
    @overload
    def __get__(self, obj: Repository[Sync], owner: Any) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: Repository[Async], owner: Any) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, obj: Any, owner: Any) -> Any:
        return self if obj is None else obj.__dict__[self.name]


class keyed(operation[P, T]):
    """An operation whose builder takes the database's token keyring first."""

    def __init__(self, build: Callable[Concatenate[Keyring | None, P], Operation[T]]) -> None:
        self.build = build
        self.name = build.__name__

    def _builder(self, context: dict[str, Any]) -> Callable[..., Operation[T]]:
        return partial(self.build, context["keyring"])


class retried(operation[P, T]):
    """An event-queue operation given the database's retry policy by keyword: ``max_attempts``
    and ``retry_delay`` from its settings (``event_max_attempts``, ``event_retry_delay``)."""

    def _builder(self, context: dict[str, Any]) -> Callable[..., Operation[T]]:
        settings = context.get("settings")
        if settings is None:  # a repository made without settings: the operation's defaults
            return self.build
        return partial(
            self.build,
            max_attempts=settings.event_max_attempts,
            retry_delay=settings.event_retry_delay,
        )


class TradeRepository(Repository[M]):
    """Trades: insert (idempotent on tx_hash and log_index), read, complete, list, count."""

    insert = operation(trade_ops.insert)
    insert_many = operation(trade_ops.insert_many)
    get = operation(trade_ops.get)
    get_by_id = operation(trade_ops.get_by_id)
    update_status = operation(trade_ops.update_status)
    list = operation(trade_ops.list)
    pending = operation(trade_ops.pending)
    count = operation(trade_ops.count)


class SchwabAuthRepository(Repository[M]):
    """The single row of Schwab tokens, sealed with the database's token keyring."""

    save = keyed(auth_ops.save)
    load = keyed(auth_ops.load)
    status = operation(auth_ops.status)
    encrypt = keyed(auth_ops.encrypt)
    rotate = keyed(auth_ops.rotate)
    decrypt = keyed(auth_ops.decrypt)


class FillRepository(Repository[M]):
    """On-chain fills: record (store, accumulate, start an execution when due), read, list."""

    record = operation(fill_ops.record)
    get = operation(fill_ops.get)
    list = operation(fill_ops.list)


class ExecutionRepository(Repository[M]):
    """Schwab executions of whole shares: complete, fail, read, and their links to fills."""

    complete = operation(execution_ops.complete)
    fail = operation(execution_ops.fail)
    get = operation(execution_ops.get)
    pending = operation(execution_ops.pending)
    links = operation(execution_ops.links)


class AccumulatorRepository(Repository[M]):
    """Per-symbol accumulators of fractional shares."""

    get = operation(accumulator_ops.get)
    list = operation(accumulator_ops.list)


class EventQueue(Repository[M]):
    """The durable event queue, outside a transaction: enqueue, count, record a failed attempt,
    and the dead letters: list, count, revive.

    Claiming needs a transaction to hold the claim: see ``TransactionEventQueue``.
    ``mark_failed`` is here too, for a worker whose transaction could not record the attempt
    (its connection was lost): it runs in a transaction of its own.
    """

    enqueue = operation(event_ops.enqueue)
    count_unprocessed = operation(event_ops.count_unprocessed)
    mark_failed = retried(event_ops.mark_failed)
    dead_letters = operation(event_ops.dead_letters)
    count_dead_letters = operation(event_ops.count_dead_letters)
    revive = operation(event_ops.revive)


class TransactionEventQueue(EventQueue[M]):
    """The event queue inside a transaction: a claim holds its event until the transaction ends."""

    claim_next = operation(event_ops.claim_next)
    mark_processed = operation(event_ops.mark_processed)


# --- the event store (issue #27) -----------------------------------------------------------


def _announced(gen: Generator[Any, Any, T], appended: Callable[[], None]) -> Generator[Any, Any, T]:
    value = yield from gen
    appended()
    return value


class notifying(operation[P, T]):
    """An append: once its statement has returned, the owner's ``appended`` hook runs (the
    database's notifier; in a transaction, a mark that pokes it after the commit)."""

    def _builder(self, context: dict[str, Any]) -> Callable[..., Operation[T]]:
        appended: Callable[[], None] | None = context.get("appended")
        if appended is None:
            return self.build
        build = self.build

        def notifying_build(*args: Any, **kwargs: Any) -> Operation[T]:
            op = build(*args, **kwargs)
            if isinstance(op, Steps):
                op.gen = _announced(op.gen, appended)
                return op
            decode = op.decode

            def decoded(result: Any) -> Any:
                value = decode(result)
                appended()
                return value

            op.decode = decoded
            return op

        return notifying_build


class driven(operation[P, T]):
    """A method that is more than one operation (``project``, ``wait_for``), declared by its
    signature: the database hands the driver that runs it, in its I/O style, as
    ``context[name]``."""

    def __init__(self, signature: Callable[P, T]) -> None:
        super().__init__(cast("Callable[P, Operation[T]]", signature))  # its name and docs only

    def bind(self, run: Run, context: dict[str, Any]) -> Callable[P, Any]:
        return cast("Callable[P, Any]", context[self.name])


def _project(
    name: str,
    handler: Callable[[Any, list[RecordedEvent]], Any],
    *,
    limit: int = 500,
    version: int | None = None,
    reset: Callable[[Any], Any] | None = None,
) -> int:
    """Run one batch of the projection ``name``, in one transaction; how many events it handled.

    Locks the projection's checkpoint (creating it at 0; a second projector of the name waits
    for the first to commit, so no event is handled twice), reads up to ``limit`` events after
    it (gap-free), calls ``handler(tx, events)`` (awaited on the async API) when there are any,
    advances the checkpoint to the last one, and commits. Write the projection's effects with
    ``tx`` (its repositories or ``tx.connection``): they commit with the checkpoint, exactly
    once. A handler that raises rolls back its writes and the checkpoint together.

    ``version``: the projection's version (an int). When it is newer than the stored one (or
    the checkpoint has none), ``reset(tx)`` is called and the checkpoint goes back to 0 in the
    same transaction: a rebuild. An older one raises InvalidTransition (an old projector still
    runs). ``project`` returns 0 when nothing is left to handle: wait with ``wait_for``.
    """
    raise NotImplementedError  # a signature: the database's driver runs


def _wait_for(after_position: int, *, timeout: float, poll_interval: float = 0.5) -> bool:
    """True as soon as an event past ``after_position`` is readable by ``read_all``; False when
    ``timeout`` seconds pass first.

    Woken by the notification the library sends after appends commit, and checking every
    ``poll_interval`` seconds besides, so a lost notification (PgBouncer in transaction mode, a
    reconnect, a writer that is not this library) costs latency, never an event.
    """
    raise NotImplementedError  # a signature: the database's driver runs


_project.__name__ = _project.__qualname__ = "project"
_wait_for.__name__ = _wait_for.__qualname__ = "wait_for"


class TransactionEventStore(Repository[M]):
    """The event store inside a transaction: append, load, read, snapshots, compaction.

    Its appends commit with the transaction; the database's notifier is poked after the commit
    (``appended``).
    """

    append = notifying(event_store_ops.append)
    load = operation(event_store_ops.load)
    last_sequence = operation(event_store_ops.last_sequence)
    read_all = operation(event_store_ops.read_all)
    save_snapshot = operation(event_store_ops.save_snapshot)
    load_snapshot = operation(event_store_ops.load_snapshot)
    compact = operation(event_store_ops.compact)

    def __init__(self, run: Run, **context: Any) -> None:
        self.appended = False
        context.setdefault("appended", self._mark)
        super().__init__(run, **context)

    def _mark(self) -> None:
        self.appended = True


class EventStore(TransactionEventStore[M]):
    """The event store of a database (``db.event_store``): each operation in autocommit, and
    ``project`` and ``wait_for``."""

    append = notifying(event_store_ops.append_alone)

    project = driven(_project)
    wait_for = driven(_wait_for)

    def __init__(self, run: Run, **context: Any) -> None:
        self.wakeups: Any = context.get("wakeups")  # the notifier: the database closes it
        super().__init__(run, **context)


class Checkpoints(Repository[M]):
    """Projection checkpoints inside a transaction (``tx.checkpoints``): get, advance."""

    get = operation(event_store_ops.get)
    advance = operation(event_store_ops.advance)
