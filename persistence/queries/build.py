"""What the statement modules share: placeholders, column lists, and the paged-list builder.

Values always travel as bound parameters (psycopg's ``%(name)s``), never inside the SQL. PyPika
renders ``%`` in literals unescaped and turns Decimal and datetime into text when it
parameterises by itself, so statements use explicit ``param`` placeholders only, and no literal
holds a ``%`` (a test checks every statement).
"""

from __future__ import annotations

from typing import Any

from pypika import Order, Parameter, Table
from pypika import PostgreSQLQuery as Query
from pypika.terms import Criterion, Field

__all__ = ["PagedList", "columns", "param", "period", "quoted"]


def param(name: str) -> Parameter:
    """The placeholder of the parameter ``name``."""
    return Parameter(f"%({name})s")


def columns(table: Table, names: tuple[str, ...]) -> list[Field]:
    """``table``'s fields named ``names``, in that order."""
    return [table.field(name) for name in names]


def quoted(names: tuple[str, ...]) -> str:
    """Column names as a quoted SQL list, for the statements PyPika cannot build (COPY)."""
    return ",".join(f'"{c}"' for c in names)


def period(column: Field) -> dict[str, Criterion]:
    """The filters ``since`` (inclusive) and ``until`` (exclusive) on ``column``."""
    return {"since": column >= param("since"), "until": column < param("until")}


class PagedList:
    """One page of rows by ascending id after ``after_id``, at most ``limit``: keyset paging.

    ``filters`` maps each optional filter to its condition on the parameter of the same name;
    ``where`` is a condition every page has. One statement per combination of filters given,
    built on first use and kept, so that each can use its index; calling it returns the
    statement and its parameters.
    """

    __slots__ = ("_built", "_filters", "_select", "name")

    def __init__(
        self,
        name: str,
        table: Table,
        names: tuple[str, ...],
        *,
        filters: dict[str, Criterion] | None = None,
        where: Criterion | None = None,
    ) -> None:
        self.name = name
        self._filters = filters or {}
        first = [] if where is None else [where]
        self._select = (table, columns(table, names), [*first, table.id > param("after_id")])
        self._built: dict[tuple[bool, ...], str] = {}

    def sql(self, given: tuple[bool, ...]) -> str:
        """The statement for the filters flagged in ``given`` (in ``filters`` order)."""
        sql = self._built.get(given)
        if sql is None:
            table, fields, conditions = self._select
            chosen = [c for c, on in zip(self._filters.values(), given, strict=True) if on]
            sql = self._built[given] = (
                Query.from_(table)
                .select(*fields)
                .where(Criterion.all([*conditions, *chosen]))
                .orderby(table.id, order=Order.asc)
                .limit(param("limit"))
                .get_sql()
            )
        return sql

    def __call__(self, *, limit: int, after_id: int, **filters: Any) -> tuple[str, dict[str, Any]]:
        """SQL and parameters for one page; a filter given as None is left out."""
        if filters.keys() != self._filters.keys():
            raise TypeError(f"{self.name} takes the filters {', '.join(self._filters)}")
        given = tuple(filters[name] is not None for name in self._filters)
        return self.sql(given), {**filters, "limit": limit, "after_id": after_id}

    def statements(self) -> dict[str, str]:
        """Every variant, named by the filters it has."""
        variants = {}
        for flags in range(2 ** len(self._filters)):
            given = tuple(bool(flags & (1 << bit)) for bit in range(len(self._filters)))
            shown = ", ".join(f"{n}={g}" for n, g in zip(self._filters, given, strict=True))
            variants[f"{self.name}({shown})"] = self.sql(given)
        return variants
