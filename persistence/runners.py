"""Runners: the only code that does I/O for operations (``persistence.operations``).

There is one driver per I/O style: ``run_on`` for a blocking connection and ``arun_on`` for an
asyncio one. Each executes a :class:`Query` in one round trip, or drives a :class:`Steps`
generator, inside a transaction when it is atomic (a savepoint when one is already open).
psycopg's errors leave a driver as they are: the database, which knows whether the server went
away with the connection, translates them (``Database._failed``); only a savepoint step's
constraint violation is translated here, to be thrown into its generator. Everything an
operation means lives in the operation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable, Iterator
from contextlib import nullcontext
from itertools import islice
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from persistence._translate import translate
from persistence.errors import PersistenceError, ValidationError
from persistence.operations import ALL, COUNT, ONE, Batch, Copy, Operation, Query, Step, Steps
from persistence.validation import SURROGATE_REASON, surrogate_at

__all__ = ["arun_on", "run_on"]

IDLE = TransactionStatus.IDLE

Connection = psycopg.Connection[Any]
AsyncConnection = psycopg.AsyncConnection[Any]


class _Driver:
    """The pure part of driving a Steps generator: what comes next, given the last result."""

    __slots__ = ("error", "gen", "reply")

    def __init__(self, steps: Steps[Any]) -> None:
        self.gen = steps.gen
        self.reply: Any = None
        self.error: PersistenceError | None = None

    def next(self) -> Step | None:
        """The next step, or None once the generator has returned (its value is ``reply``)."""
        reply, error = self.reply, self.error
        self.reply = self.error = None
        try:
            return self.gen.send(reply) if error is None else self.gen.throw(error)
        except StopIteration as done:
            self.reply = done.value
            return None

    def failed(self, exc: psycopg.Error) -> None:
        """A savepoint step broke a constraint and was rolled back: the generator gets our
        error (a Conflict, a ValidationError). Any other failure leaves the driver as it is,
        so that the database sees it (a lost connection, a read-only server)."""
        self.error = translate(exc)


def _savepoint(conn: Any) -> Any:
    """What a savepoint step runs in: a savepoint (``conn.transaction()``), or nothing when no
    transaction is open: an autocommit statement is a transaction of its own, and its failure
    undoes nothing else, without a BEGIN and a COMMIT (two round trips). Either way, sync or
    async (``nullcontext`` is both)."""
    return conn.transaction() if conn.pgconn.transaction_status != IDLE else nullcontext()


def _cursor(conn: Any, fetch: int) -> Any:
    """The cursor a statement runs on. A statement of at most one row (or a count) on a
    connection with no transaction open (``Database.run``'s, lent to one call) runs on the
    connection's own cursor, made at its first use and reused: psycopg's ``conn.execute`` makes
    a cursor per statement, about 43,000 client instructions of a 112,000 round trip
    (docs/performance.md). Inside a transaction user code may share the connection between
    threads or tasks, or pipeline it, and a cursor is not safe to share: a cursor per statement
    there, as for rows of ``ALL`` (no idle connection keeps a large result)."""
    if fetch == ALL or conn.pgconn.transaction_status != IDLE:
        return conn.cursor()
    try:
        return conn.point_cursor
    except AttributeError:  # tuples, as the decoders read them, whatever conn.row_factory says
        cursor = conn.point_cursor = conn.cursor(row_factory=tuple_row)
        return cursor


def _fetched(cursor: psycopg.Cursor[Any], fetch: int) -> Any:
    if fetch == ONE:
        return cursor.fetchone()
    if fetch == ALL:
        return cursor.fetchall()
    return cursor.rowcount if fetch == COUNT else None


def _unencodable(step: Query[Any] | Copy) -> ValidationError:
    """The error for a text parameter UTF-8 cannot encode (a lone surrogate) that no check
    before caught: psycopg's UnicodeEncodeError would carry the whole text in its repr, which
    may be a token. Names the parameter, never the value."""
    params = step.params if isinstance(step, Query) else None
    names = sorted(
        name
        for name, value in (params.items() if isinstance(params, dict) else ())
        if isinstance(value, str) and surrogate_at(value) is not None
    )
    where = ", ".join(names) if names else "a text value"
    return ValidationError(f"{where} holds a lone surrogate (value not shown): {SURROGATE_REASON}")


def _execute(conn: Connection, step: Query[Any] | Copy) -> Any:
    try:
        return _send(conn, step)
    except UnicodeEncodeError:
        pass  # raised below, outside the handler, so that no chained exception keeps the text
    raise _unencodable(step)


def _send(conn: Connection, step: Query[Any] | Copy) -> Any:
    if type(step) is Query:
        cursor = _cursor(conn, step.fetch).execute(step.sql, step.params, binary=step.binary)
        return _fetched(cursor, step.fetch)
    assert isinstance(step, Copy)
    with conn.cursor() as cursor:
        with cursor.copy(step.sql) as copy:
            for row in step.rows:
                copy.write_row(row)
        return cursor.rowcount


def _drive(conn: Connection, steps: Steps[Any]) -> Any:
    driver = _Driver(steps)
    source: Iterator[Any] = iter(steps.source or ())
    while (step := driver.next()) is not None:
        if isinstance(step, Batch):
            driver.reply = list(islice(source, step.size))
        elif not step.savepoint:
            driver.reply = _execute(conn, step)
        else:
            try:
                with _savepoint(conn):
                    driver.reply = _execute(conn, step)
            except psycopg.IntegrityError as exc:
                driver.failed(exc)
    return driver.reply


def run_on(conn: Connection, op: Operation[Any]) -> Any:
    """Run ``op`` on a blocking connection."""
    if type(op) is Query:  # _execute, inlined: a point operation's path (docs/performance.md)
        try:
            cursor = _cursor(conn, op.fetch).execute(op.sql, op.params, binary=op.binary)
            result = cursor.fetchone() if op.fetch == ONE else _fetched(cursor, op.fetch)
        except UnicodeEncodeError:
            pass  # as in _execute
        else:
            return op.decode(result)
        raise _unencodable(op)
    assert isinstance(op, Steps)
    if not op.atomic:
        return _drive(conn, op)
    with conn.transaction():
        return _drive(conn, op)


# --- asyncio: the same, awaited ------------------------------------------------------------

# CPU work on many rows (COPY formatting, reading a plain iterable) gives the event loop a turn
# every SLICE rows, so that no step of the layer holds the loop for long.
SLICE = 256


async def _afetched(cursor: psycopg.AsyncCursor[Any], fetch: int) -> Any:
    if fetch == ONE:
        return await cursor.fetchone()
    if fetch == ALL:
        return await cursor.fetchall()
    return cursor.rowcount if fetch == COUNT else None


async def _aexecute(conn: AsyncConnection, step: Query[Any] | Copy) -> Any:
    try:
        return await _asend(conn, step)
    except UnicodeEncodeError:
        pass  # as in _execute
    raise _unencodable(step)


async def _asend(conn: AsyncConnection, step: Query[Any] | Copy) -> Any:
    if type(step) is Query:
        cursor = await _cursor(conn, step.fetch).execute(step.sql, step.params, binary=step.binary)
        return await _afetched(cursor, step.fetch)
    assert isinstance(step, Copy)
    async with conn.cursor() as cursor:
        async with cursor.copy(step.sql) as copy:
            for count, row in enumerate(step.rows, 1):
                await copy.write_row(row)  # buffers without a pause while the socket takes it
                if not count % SLICE:
                    await asyncio.sleep(0)
        return cursor.rowcount


async def _abatch(source: Any, size: int) -> list[Any]:
    """Up to ``size`` items of an async iterator, or of a plain one (a slice at a time)."""
    items: list[Any] = []
    if not hasattr(source, "__anext__"):
        while len(items) < size and (part := list(islice(source, min(SLICE, size - len(items))))):
            items += part
            await asyncio.sleep(0)
        return items
    while len(items) < size:
        try:
            items.append(await anext(source))
        except StopAsyncIteration:
            break
    return items


def _aiter(source: AsyncIterable[Any] | Iterable[Any] | None) -> Any:
    if source is None:
        return iter(())
    return aiter(source) if isinstance(source, AsyncIterable) else iter(source)


async def _adrive(conn: AsyncConnection, steps: Steps[Any]) -> Any:
    driver = _Driver(steps)
    source = _aiter(steps.source)
    while (step := driver.next()) is not None:
        if isinstance(step, Batch):
            driver.reply = await _abatch(source, step.size)
        elif not step.savepoint:
            driver.reply = await _aexecute(conn, step)
        else:
            try:
                async with _savepoint(conn):
                    driver.reply = await _aexecute(conn, step)
            except psycopg.IntegrityError as exc:
                driver.failed(exc)
    return driver.reply


async def arun_on(conn: AsyncConnection, op: Operation[Any]) -> Any:
    """Run ``op`` on an asyncio connection."""
    if type(op) is Query:  # _aexecute, inlined: three coroutines fewer per call
        try:
            cursor = await _cursor(conn, op.fetch).execute(op.sql, op.params, binary=op.binary)
            if op.fetch == ONE:
                result = await cursor.fetchone()
            else:
                result = await _afetched(cursor, op.fetch)
        except UnicodeEncodeError:
            pass  # as in _execute
        else:
            return op.decode(result)
        raise _unencodable(op)
    assert isinstance(op, Steps)
    if not op.atomic:
        return await _adrive(conn, op)
    async with conn.transaction():
        return await _adrive(conn, op)
