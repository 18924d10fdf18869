"""The third layout's other tables: checked, created and COPYed in the import's transaction, and
verified against the file re-read; a read model's checkpoint moved into ``checkpoints``.

``layout3_schema`` decides each table's PostgreSQL definition; this module moves the rows:

- read: each value converted to its column's type (:func:`convert`), every value that does not
  fit named as an invalid row (table, rowid, column); a generated column whose value PostgreSQL
  would compute differently from the file's (``json_extract`` and ``#>>`` spell a JSON number,
  a boolean or an object differently) names its row too. A ``*_view`` row whose aggregate is left
  out (``--skip-invalid``) is left out with it, and noted: the view of ``position_view`` is the
  aggregate ``Position`` with ``view_id`` as its id.
- check: no table, index or checkpoint of the same name may exist in PostgreSQL.
- write: CREATE TABLE and its indexes, COPY the rows; a checkpointed read model's table
  (``X_checkpoint`` with a ``last_rowid`` column: the ledger's ``pnl_ledger_checkpoint``) also
  becomes the event store's checkpoint ``X`` at position ``last_rowid`` (position = rowid, so it
  names the same event) with its ``*version`` column as the checkpoint's version.
- verify: ``layout3_verify``.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from functools import partial
from typing import Any

import attrs

from persistence.import_sqlite._layout import Run
from persistence.import_sqlite._report import ImportFailed, Progress
from persistence.import_sqlite._source import open_text
from persistence.import_sqlite._target import copy_rows
from persistence.import_sqlite.convert import Invalid, shown, to_datetime
from persistence.import_sqlite.layout3_json import canonical, check_json
from persistence.import_sqlite.layout3_schema import (
    Column,
    Table,
    column_kind,
    create_statements,
    quoted,
    read_tables,
    round_trips,
)

__all__ = ["Tables", "check_tables", "convert", "read_other", "write_tables"]

_SURROGATE = re.compile("[\ud800-\udfff]")
_NESTED = object()  # a JSON object or array: PostgreSQL's text of it is not SQLite's


@attrs.define
class Tables:
    """The other tables: definitions, counts, the rows left out, the checkpoints to write."""

    tables: list[Table] = attrs.field(factory=list)
    read: dict[str, int] = attrs.field(factory=dict)
    invalid: dict[str, int] = attrs.field(factory=dict)
    inserted: dict[str, int] = attrs.field(factory=dict)
    left_out: dict[str, set[Any]] = attrs.field(factory=dict)
    # (checkpoint name, position, version, source table)
    checkpoints: list[tuple[str, int, int | None, str]] = attrs.field(factory=list)


def _text(column: str, value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(column, value, f"is {type(value).__name__}, not text")
    if "\x00" in value:
        raise Invalid(column, value, "has a NUL character, which PostgreSQL text cannot hold")
    if _SURROGATE.search(value):
        raise Invalid(column, value, "is not valid UTF-8")
    return value


def convert(column: Column, value: Any, notes: list[tuple[str, str]]) -> Any:
    """``value`` as its column's PostgreSQL type, exactly, or Invalid; changes noted in
    ``notes`` as (value shown, why)."""
    if value is None:
        if column.not_null:
            raise Invalid(column.name, value, "is NULL in a NOT NULL column")
        return None
    kind = column.kind
    if kind == "text":
        return _text(column.name, value)
    if kind == "bigint" and type(value) is int:
        return value
    if kind == "boolean" and value in (0, 1) and type(value) is int:
        return bool(value)
    if kind == "double precision" and isinstance(value, int | float):
        if isinstance(value, int) and float(value) != value:
            raise Invalid(column.name, value, "is an integer a double cannot hold exactly")
        return float(value)
    if kind == "numeric":
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float) and math.isfinite(value):
            return Decimal(value)  # the double's exact binary value
        if round_trips(value):
            return Decimal(value)
        raise Invalid(column.name, value, "is not a decimal numeric gives back as it is written")
    if kind == "jsonb":
        why, respelled = check_json(_text(column.name, value), objects_only=False)
        if why is not None:
            raise Invalid(column.name, value, why)
        for written, stored in respelled:
            notes.append((written, f"jsonb stores this number as {stored} (the same value)"))
        return value
    if kind == "timestamptz":
        moment, rounded = to_datetime(column.name, value)
        if rounded:
            notes.append((shown(column.name, value), "rounded to the microsecond"))
        return moment
    if kind == "bytea" and isinstance(value, bytes):
        return value
    raise Invalid(column.name, value, f"is {type(value).__name__}, not {kind}")


def _extracted(document: Any, path: tuple[str, ...]) -> Any:
    """What PostgreSQL's ``#>>`` gives for ``path`` in ``document`` (parsed by canonical)."""
    value = document
    for step in path:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and re.fullmatch(r"-?\d+", step):
            index = int(step)
            if not -len(value) <= index < len(value):
                return None
            value = value[index]
        else:
            return None
    if value is None or isinstance(value, str):  # Number is a str: jsonb's spelling
        return value if value is None else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NESTED


def _aggregate(table: Table) -> str | None:
    """The aggregate type (lower case, no underscores) a ``*_view`` table shows."""
    if table.name.endswith("_view") and any(c.name == "view_id" for c in table.columns):
        return table.name.removesuffix("_view").replace("_", "").lower()
    return None


def _kinds(conn: sqlite3.Connection, names: list[str]) -> dict[tuple[str, str], str]:
    kinds = {}
    for name in names:
        for row in conn.execute(f"PRAGMA table_xinfo({quoted(name)})").fetchall():
            if row[6] in (2, 3):  # generated: text, decided by layout3_schema
                continue
            select = f"SELECT {quoted(row[1])} FROM {quoted(name)}"
            kinds[(name, row[1])] = column_kind(row[1], row[2], partial(_values, conn, select))
    return kinds


def _values(conn: sqlite3.Connection, select: str) -> Iterator[Any]:
    return (row[0] for row in conn.execute(select))


def read_other(run: Run, names: list[str], left_out: set[tuple[str, str]]) -> Tables:
    """Decide every table's definition and check every row; nothing is written."""
    data = Tables()
    aggregates = {(t.lower(), i) for t, i in left_out}
    with closing(open_text(run.path)) as conn:
        data.tables = read_tables(conn, names, _kinds(conn, names))
        for table in data.tables:
            _read_table(run, conn, table, data, aggregates)
    return data


def _read_table(
    run: Run,
    conn: sqlite3.Connection,
    table: Table,
    data: Tables,
    aggregates: set[tuple[str, str]],
) -> None:
    name, width = table.name, table.key_width
    data.read[name] = data.invalid[name] = 0
    left_out: set[Any] = data.left_out.setdefault(name, set())
    view = _aggregate(table)
    kinds = {c.name: c.kind for c in table.columns}
    total = conn.execute(f"SELECT count(*) FROM {quoted(name)}").fetchone()[0]
    bar = Progress(total, run.progress, f"{name}: checked")
    rows = conn.execute(table.select())
    while batch := rows.fetchmany(run.batch_size):
        for row in batch:
            data.read[name] += 1
            key = row[0] if width == 1 else tuple(row[:width])
            values = dict(zip((c.name for c in table.columns), row[width:], strict=True))
            if view is not None and (view, values["view_id"]) in aggregates:
                left_out.add(key)
                run.problems.note(
                    name,
                    key,
                    "view_id",
                    str(values["view_id"]),
                    "left out with its aggregate, whose events are invalid",
                )
                continue
            why = _row_problem(table, values, kinds)
            if why is not None:
                run.problems.invalid(name, key, why[0], shown(why[0], why[1]), why[2])
                data.invalid[name] += 1
                left_out.add(key)
                continue
        bar.update(data.read[name])
    bar.update(data.read[name], final=True)
    if name.endswith("_checkpoint") and "last_rowid" in kinds:
        _checkpoint(run, conn, table, data)


def _row_problem(
    table: Table, values: dict[str, Any], kinds: dict[str, str]
) -> tuple[str, Any, str] | None:
    """(column, value, why) for the first value of the row that cannot be moved, or None."""
    documents: dict[str, Any] = {}
    notes: list[tuple[str, str]] = []
    for column in table.columns:
        value = values[column.name]
        if column.generated:
            continue
        try:
            convert(column, value, notes)
        except Invalid as error:
            return (column.name, value, error.reason)
        if kinds[column.name] == "jsonb" and value is not None:
            documents[column.name] = canonical(value)
    for column in table.columns:
        if not column.generated:
            continue
        assert column.generated_from is not None and column.path is not None
        if kinds[column.generated_from] != "jsonb":
            return (column.name, None, f"is generated from {column.generated_from}, not JSON")
        document = documents.get(column.generated_from)
        expected = None if document is None else _extracted(document, column.path)
        if expected is _NESTED or expected != values[column.name]:
            return (
                column.name,
                values[column.name],
                "PostgreSQL's #>> would give "
                + (
                    "a JSON object or array spelled its own way"
                    if expected is _NESTED
                    else repr(expected)
                )
                + " from the same JSON (SQLite's json_extract spells numbers, booleans and "
                "nested values differently)",
            )
    return None


def _checkpoint(run: Run, conn: sqlite3.Connection, table: Table, data: Tables) -> None:
    version = next((c.name for c in table.columns if c.name.endswith("version")), None)
    rows = conn.execute(
        f"SELECT last_rowid, {quoted(version) if version else 'NULL'} FROM {quoted(table.name)}"
    ).fetchall()
    if len(rows) > 1:
        raise ImportFailed(
            f"{table.name} holds {len(rows)} rows: a read model's checkpoint is one row (its "
            "last_rowid); nothing was imported"
        )
    for position, number in rows:
        if (
            type(position) is not int
            or position < 0
            or not (number is None or (type(number) is int and number >= 0))
        ):
            raise ImportFailed(
                f"{table.name}: last_rowid {position!r}, version {number!r} are not a "
                "checkpoint (integers from 0); nothing was imported"
            )
        data.checkpoints.append(
            (table.name.removesuffix("_checkpoint"), position, number, table.name)
        )


def check_tables(run: Run, data: Tables) -> None:
    """Refuse names PostgreSQL already holds: a table, an index, a checkpoint."""
    names = [t.name for t in data.tables] + [i.name for t in data.tables for i in t.indexes]
    taken = run.target.execute(
        "SELECT relname FROM pg_class WHERE relname = ANY(%s) "
        "AND relnamespace = current_schema()::regnamespace",
        (names,),
    ).fetchall()
    points = [c[0] for c in data.checkpoints]
    taken += run.target.execute(
        "SELECT 'checkpoint ' || name FROM checkpoints WHERE name = ANY(%s)", (points,)
    ).fetchall()
    if taken:
        raise ImportFailed(
            f"PostgreSQL already holds {', '.join(sorted(r[0] for r in taken))}: the import "
            "creates the file's tables, indexes and checkpoints under their own names; import "
            "into a database without them. Nothing was imported"
        )


def write_tables(run: Run, data: Tables) -> None:
    """Create each table and its indexes, COPY its rows, and write the checkpoints."""
    with closing(open_text(run.path)) as conn:
        for table in data.tables:
            for statement in create_statements(table):
                run.target.execute(statement)
            data.inserted[table.name] = 0
            copy_rows(
                run.target,
                f"COPY {quoted(table.name)} ({', '.join(quoted(c.name) for c in table.stored)}) "
                "FROM STDIN",
                _rows(run, conn, table, data),
            )
            if table.identity:
                highest = f"greatest(max({quoted(table.identity)}), %s)"
                run.target.execute(
                    f"SELECT setval(pg_get_serial_sequence(%s, %s), {highest}) "
                    f"FROM {quoted(table.name)} HAVING {highest} >= 1",
                    (quoted(table.name), table.identity, table.next_above, table.next_above),
                )
    for name, position, version, _ in data.checkpoints:
        run.target.execute(
            "INSERT INTO checkpoints (name, position, version) VALUES (%s, %s, %s)",
            (name, position, version),
        )


def _rows(
    run: Run, conn: sqlite3.Connection, table: Table, data: Tables
) -> Iterator[tuple[Any, ...]]:
    width, left_out = table.key_width, data.left_out[table.name]
    notes: list[tuple[str, str]] = []
    stored = [i for i, c in enumerate(table.columns) if not c.generated]
    bar = Progress(data.read[table.name], run.progress, f"{table.name}: written")
    rows = conn.execute(table.select())
    while batch := rows.fetchmany(run.batch_size):
        for row in batch:
            if (row[0] if width == 1 else tuple(row[:width])) in left_out:
                continue
            values = row[width:]
            data.inserted[table.name] += 1
            yield tuple(convert(table.columns[i], values[i], notes) for i in stored)
        bar.update(data.inserted[table.name])
    bar.update(data.inserted[table.name], final=True)
