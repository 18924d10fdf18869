"""Transaction blocks: the repositories on one borrowed connection, and savepoints in them.

``db.transaction()`` returns a ``Block``; entering it borrows a connection and begins, and
gives a ``Transaction`` (the repositories bound to that connection). A database hands its
blocks what they need of it once, as a ``Lending``; the errors of the block, its commit and its
savepoints become ours through ``Lending.failed``, the database's one point of translation.
A block whose event-store appends committed pokes the database's notifier (``Lending.appended``)
so that ``wait_for`` callers wake at once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Generic

import attrs
import psycopg

from persistence.config import Settings
from persistence.errors import PersistenceError
from persistence.operations import Operation
from persistence.repositories import (
    AccumulatorRepository,
    Checkpoints,
    EventQueue,
    ExecutionRepository,
    FillRepository,
    M,
    SchwabAuthRepository,
    TradeRepository,
    TransactionEventQueue,
    TransactionEventStore,
)
from persistence.tokens import Keyring

__all__ = ["AsyncTransaction", "Block", "Lending", "Repositories", "Transaction"]

Run = Callable[[Operation[Any]], Any]


class Repositories(Generic[M]):
    """The repositories, their methods bound to one runner: a database's or a transaction's."""

    __slots__ = (
        "accumulators",
        "event_store",
        "events",
        "executions",
        "fills",
        "schwab_auth",
        "trades",
    )

    trades: TradeRepository[M]
    schwab_auth: SchwabAuthRepository[M]
    fills: FillRepository[M]
    executions: ExecutionRepository[M]
    accumulators: AccumulatorRepository[M]
    events: EventQueue[M]
    event_store: TransactionEventStore[M]

    def _bind(
        self,
        run: Run,
        keyring: Keyring | None,
        settings: Settings,
        events: type[EventQueue[Any]] = EventQueue,
        event_store: type[TransactionEventStore[Any]] = TransactionEventStore,
        **store: Any,
    ) -> None:
        """Bind every repository to ``run``; ``events`` and ``event_store`` are the classes of
        the owner's queue and store (a database's store takes its drivers as ``store``)."""
        self.trades = TradeRepository(run)
        self.schwab_auth = SchwabAuthRepository(run, keyring=keyring)
        self.fills = FillRepository(run)
        self.executions = ExecutionRepository(run)
        self.accumulators = AccumulatorRepository(run)
        self.events = events(run, settings=settings)
        self.event_store = event_store(run, **store)


@attrs.frozen
class Lending:
    """What a database's transaction blocks need of it, in its I/O style (awaitables for
    asyncio): ``borrow()`` a pooled connection, ``give_back(conn)`` with its session reset,
    ``run_on(conn, op)`` with our errors, ``failed(conn, exc)``: our error for a psycopg one
    raised on the connection, ``settle(conn)`` after the commit: CommitNotReplicated when
    the server acknowledged it only locally, and ``appended()``: poke the notifier of the
    database's event store (after a block whose appends committed)."""

    borrow: Callable[[], Any]
    give_back: Callable[[Any], Any]
    run_on: Callable[[Any, Operation[Any]], Any]
    failed: Callable[[Any, psycopg.Error], PersistenceError]
    settle: Callable[[Any], Any]
    keyring: Keyring | None
    settings: Settings
    appended: Callable[[], None]


class Transaction(Repositories[M]):
    """The repositories bound to one connection inside a database's ``transaction()`` block.

    ``Transaction[Sync]`` in ``Database.transaction()``, ``Transaction[Async]`` (whose methods
    are awaited) in ``AsyncDatabase.transaction()``.
    """

    __slots__ = ("_lending", "checkpoints", "connection")

    events: TransactionEventQueue[M]

    def __init__(self, lending: Lending, connection: Any) -> None:
        self._lending = lending
        self.connection = connection
        run = partial(lending.run_on, connection)
        self._bind(run, lending.keyring, lending.settings, TransactionEventQueue)
        self.checkpoints: Checkpoints[M] = Checkpoints(run)

    def run(self, op: Operation[Any]) -> Any:
        """Run one operation (``persistence.operations``) on this transaction's connection and
        return its result (awaitable in ``AsyncDatabase.transaction()``); our errors only."""
        return self._lending.run_on(self.connection, op)

    def transaction(self) -> _Savepoint[M]:
        """A nested block, ``with`` (or ``async with``): a savepoint, rolled back alone when
        the block raises."""
        return _Savepoint(self, self._lending)


AsyncTransaction = Transaction  # the async API's name for Transaction[Async]


class _Translated:
    """``with``: a psycopg error raised inside leaves as ours (``Lending.failed``)."""

    __slots__ = ("_conn", "_failed")

    def __init__(self, lending: Lending, conn: Any) -> None:
        self._failed = lending.failed
        self._conn = conn

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, psycopg.Error):
            raise self._failed(self._conn, exc) from None


class _Savepoint(Generic[M]):
    """psycopg's nested transaction block, with our errors, for either I/O style."""

    __slots__ = ("_block", "_translated", "_tx")

    def __init__(self, tx: Transaction[M], lending: Lending) -> None:
        self._tx: Transaction[M] = tx
        self._block: Any = tx.connection.transaction()
        self._translated = _Translated(lending, tx.connection)

    def __enter__(self) -> Transaction[M]:
        with self._translated:
            self._block.__enter__()
        return self._tx

    def __exit__(self, *exc: Any) -> Any:
        with self._translated:
            return self._block.__exit__(*exc)

    async def __aenter__(self) -> Transaction[M]:
        with self._translated:
            await self._block.__aenter__()
        return self._tx

    async def __aexit__(self, *exc: Any) -> Any:
        with self._translated:
            return await self._block.__aexit__(*exc)


class Block(Generic[M]):
    """A transaction on a borrowed connection, for either I/O style; our errors on the way out.

    The connection goes back through ``Lending.give_back``, which resets its session settings.
    """

    __slots__ = ("_bound", "_conn", "_lending", "_tx")

    def __init__(self, lending: Lending) -> None:
        self._lending = lending

    def _begun(self, conn: Any) -> Transaction[M]:
        self._conn = conn
        self._tx: Any = conn.transaction()
        self._in_block(True)
        self._bound: Transaction[M] = Transaction(self._lending, conn)
        return self._bound

    def _committed(self) -> None:
        # after the commit, never inside it: a NOTIFY in the transaction would serialise
        # every appending commit on the server's notify lock (docs/event-store.md)
        if self._bound.event_store.appended:
            self._lending.appended()

    def _in_block(self, inside: bool) -> None:
        """Whether a statement in flight may be a commit (the timeout's message says so)."""
        sync_rep = getattr(self._conn, "sync_rep", None)
        if sync_rep is not None:
            sync_rep.in_block = inside

    def _error(self, exc: BaseException | None) -> BaseException | None:
        if isinstance(exc, psycopg.Error):
            return self._lending.failed(self._conn, exc)
        return None

    def __enter__(self) -> Transaction[M]:
        tx = self._begun(self._lending.borrow())
        try:
            self._tx.__enter__()
        except BaseException as exc:
            self._lending.give_back(self._conn)
            raise (self._error(exc) or exc) from None
        return tx

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self._in_block(False)
        try:
            self._tx.__exit__(kind, exc, tb)
            if exc is None:
                self._lending.settle(self._conn)
        except psycopg.Error as error:
            exc = error
        finally:
            self._lending.give_back(self._conn)
        if (failure := self._error(exc)) is not None:  # a psycopg error of the block, or the commit
            raise failure from None
        if exc is None:
            self._committed()

    async def __aenter__(self) -> Transaction[M]:
        tx = self._begun(await self._lending.borrow())
        try:
            await self._tx.__aenter__()
        except BaseException as exc:
            await self._lending.give_back(self._conn)
            raise (self._error(exc) or exc) from None
        return tx

    async def __aexit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self._in_block(False)
        try:
            await self._tx.__aexit__(kind, exc, tb)
            if exc is None:
                await self._lending.settle(self._conn)
        except psycopg.Error as error:
            exc = error
        finally:
            await self._lending.give_back(self._conn)
        if (failure := self._error(exc)) is not None:
            raise failure from None
        if exc is None:
            self._committed()
