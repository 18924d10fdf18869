"""Operations as data: what to send and how to read the answer, with no I/O.

An operation is either one :class:`Query` (a statement, its parameters, what to fetch and a pure
``decode`` of the result), or :class:`Steps`: a generator that yields statements and receives
their results, for operations of several statements. The runners in ``persistence.runners``
execute both, one runner per I/O style (blocking and asyncio); nothing here knows which.

Only a step run with ``savepoint=True`` may fail and be followed by more steps: when it breaks
a constraint (a duplicate key, a refused value), its work is undone alone (under a savepoint;
with no transaction open, it ran as a transaction of its own) and the failure is thrown into
its generator as our error (``persistence.errors``). Any other failure leaves the generator,
as every failure of another step does: it has aborted the transaction, or the connection.

``stored``, on a write that may be a retry, tells from its result that the write was found
stored already (a duplicate key): the database then reports success only once a synchronous
standby, if the server waits for one, has confirmed a commit after it (``CONFIRM``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from typing import Any, Generic, TypeVar

__all__ = [
    "ALL",
    "COUNT",
    "NONE",
    "ONE",
    "Batch",
    "Copy",
    "Operation",
    "Query",
    "Repeat",
    "Steps",
    "integer",
    "new_id",
    "nothing_new",
    "point",
]

T = TypeVar("T")

# what a Query fetches: the first row (or None), every row, the row count, or nothing
ONE, ALL, COUNT, NONE = range(4)


def _same(value: Any) -> Any:
    return value


# decodes several operation modules share
def integer(row: Any) -> int:
    """The row's one column as an int (a count)."""
    return int(row[0])


def new_id(row: Any) -> int | None:
    """The id an insert returned, or None when it inserted nothing (the row was stored already)."""
    return None if row is None else int(row[0])


def nothing_new(new: int | None) -> bool:
    """``stored`` of an insert decoded by ``new_id``: None, it found its row stored already."""
    return new is None


class Repeat:
    """``stored`` of Steps whose generator may find the move it asked for landed already (a
    retry): the generator calls ``found()`` on that path; the result does not show it."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False

    def found(self) -> None:
        self.seen = True

    def __call__(self, result: Any) -> bool:
        return self.seen


class Query(Generic[T]):
    """One statement with bound parameters; ``decode`` turns the fetched result into ``T``.

    ``binary``: results in PostgreSQL's binary format (bytea arrives as bytes, not hex text).
    ``stored``: whether a result shows the write found stored already (see the module's doc).
    """

    __slots__ = ("binary", "decode", "fetch", "params", "savepoint", "sql", "stored")

    def __init__(
        self,
        sql: str,
        params: Any = None,
        *,
        fetch: int = ONE,
        decode: Callable[[Any], T] = _same,
        savepoint: bool = False,
        binary: bool = False,
        stored: Callable[[T], bool] | None = None,
    ) -> None:
        self.sql = sql
        self.params = params
        self.fetch = fetch
        self.decode = decode
        self.savepoint = savepoint
        self.binary = binary
        self.stored = stored

    def __repr__(self) -> str:
        return f"Query({self.sql!r}, {self.params!r})"


_new = object.__new__


def point(
    sql: str, params: Any, decode: Callable[[Any], T], stored: Callable[[T], bool] | None = None
) -> Query[T]:
    """``Query(sql, params, decode=decode, stored=stored)``, built without the call by keyword
    through the class (a dict of keywords and ``__init__``'s frame each time): 4,600 -> 2,900
    instructions. For the point operations, built on every call."""
    query: Query[T] = _new(Query)
    query.sql = sql
    query.params = params
    query.fetch = ONE
    query.decode = decode
    query.savepoint = query.binary = False
    query.stored = stored
    return query


class Copy:
    """``COPY ... FROM STDIN`` of ``rows``; its result is the number of rows copied."""

    __slots__ = ("rows", "savepoint", "sql")

    def __init__(self, sql: str, rows: Iterable[tuple[Any, ...]], *, savepoint: bool = False):
        self.sql = sql
        self.rows = rows
        self.savepoint = savepoint

    def __repr__(self) -> str:
        return f"Copy({self.sql!r})"


class Batch:
    """Asks the runner for up to ``size`` items of the operation's input; [] when it is spent."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


Step = Query[Any] | Copy | Batch


class Steps(Generic[T]):
    """A generator of steps whose return value is the result; ``atomic``: one transaction.

    ``source`` is the operation's input stream (an iterable, or an async iterable on the async
    runner), read through :class:`Batch` steps so that memory stays bounded. ``stored`` as for
    a Query.
    """

    __slots__ = ("atomic", "gen", "source", "stored")

    def __init__(
        self,
        gen: Generator[Step, Any, T],
        *,
        atomic: bool = True,
        source: Any = None,
        stored: Callable[[T], bool] | None = None,
    ) -> None:
        self.gen = gen
        self.atomic = atomic
        self.source = source
        self.stored = stored


Operation = Query[T] | Steps[T]
