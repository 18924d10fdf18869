"""The third layout's other tables, as PostgreSQL will hold them: each column's type, generated
columns and indexes, read from the file's own schema (``PRAGMA table_xinfo``, ``index_xinfo``).

Every table besides ``events``, ``snapshots`` and ``_sqlx_migrations`` is carried under its
name: the ``*_view`` tables, the ``pnl_*`` ledger, ``skipped_fills``, ``backfill_checkpoints``,
telemetry samples, and any table the importer has not met (carried the same way, so no row is
ever lost without a word). A column's PostgreSQL type is the one that keeps its values exactly
(:func:`column_kind`; docs/migrating-from-sqlite.md has the table and the reasons):

- declared INTEGER (any type with INT): ``bigint``; BOOLEAN: ``boolean`` (0 or 1);
- REAL, FLOAT, DOUBLE: ``double precision`` (the same IEEE double);
- DATETIME, TIMESTAMP, DATE: ``timestamptz`` (``convert.to_datetime``'s rules);
- JSON: ``jsonb`` (``layout3_json``'s rules: what jsonb cannot hold is refused);
- NUMERIC, DECIMAL: ``numeric`` (integers, and a double's exact binary value);
- TEXT: ``text``; a money column (:data:`DECIMAL_WORDS` in its name) becomes ``numeric`` only
  if every value is a decimal that numeric gives back spelled the same, else stays ``text``;
- BLOB or no type: the storage class of its first value (``bytea``, ``text``, ``bigint``,
  ``double precision``).

A value that does not fit its column's type is an invalid row, named. A STORED or VIRTUAL
generated column ``json_extract(col, '$.a.b')`` becomes ``GENERATED ALWAYS AS (col #>>
ARRAY['a', 'b']) STORED``; any other expression, or a generated column that is not TEXT, refuses
the import, named. Primary keys, UNIQUE constraints and indexes are carried (a partial index's
WHERE if it is plain comparisons of the table's columns); CHECK constraints, defaults and foreign
keys are not (the rows are verified instead; docs say so).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator

import attrs

from persistence.import_sqlite._report import ImportFailed

__all__ = [
    "DECIMAL_WORDS",
    "Column",
    "Index",
    "Table",
    "column_kind",
    "create_statements",
    "quoted",
    "read_tables",
    "round_trips",
]

DECIMAL_WORDS = frozenset(
    {"shares", "price", "amount", "cost", "usd", "usdc", "net", "fee", "basis", "quantity"}
)
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_JSON_EXTRACT = re.compile(
    r"\s*json_extract\s*\(\s*\"?(?P<column>\w+)\"?\s*,\s*'(?P<path>\$[^']*)'\s*\)\s*", re.I
)
_PATH_STEP = re.compile(r'\.(?:"(?P<quoted>[^"]*)"|(?P<key>[^.\[\]"]+))|\[(?P<index>\d+)\]')
# what a partial index's WHERE may hold to be carried verbatim: the same SQL in both databases
_WHERE_TOKEN = re.compile(
    r"\s*(?:(?P<word>\w+)|(?P<string>'(?:[^']|'')*')|(?P<op><>|!=|<=|>=|=|<|>|\(|\)|,))", re.S
)
_WHERE_KEYWORDS = {"is", "not", "null", "and", "or", "in"}


@attrs.frozen
class Column:
    """One column: ``kind`` is its PostgreSQL type; ``path`` its JSON path if generated."""

    name: str
    declared: str
    kind: str
    not_null: bool
    generated_from: str | None = None
    path: tuple[str, ...] | None = None

    @property
    def generated(self) -> bool:
        return self.generated_from is not None


@attrs.frozen
class Index:
    name: str
    unique: bool
    keys: tuple[str, ...]  # quoted columns or expressions, with DESC where declared
    where: str | None


@attrs.frozen
class Table:
    """A table to carry: its columns in order, its key, its indexes, whether rows have a rowid."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    indexes: tuple[Index, ...]
    has_rowid: bool
    # an INTEGER PRIMARY KEY (SQLite's rowid): an identity above the highest id SQLite gave,
    # its sqlite_sequence entry included (AUTOINCREMENT never reuses an id)
    identity: str | None = None
    next_above: int = 0

    @property
    def key_width(self) -> int:
        """How many values at the start of a :meth:`select` row name it."""
        return 1 if self.has_rowid else len(self.primary_key)

    def select(self) -> str:
        """Every row: its rowid (or primary key), then every column, in a stable order."""
        key = "rowid" if self.has_rowid else ", ".join(quoted(c) for c in self.primary_key)
        columns = ", ".join(quoted(c.name) for c in self.columns)
        return f"SELECT {key}, {columns} FROM {quoted(self.name)} ORDER BY {key}"

    @property
    def stored(self) -> tuple[Column, ...]:
        """The columns COPY writes (generated ones PostgreSQL computes)."""
        return tuple(c for c in self.columns if not c.generated)


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _affinity(declared: str) -> str:
    """SQLite's affinity rules (https://sqlite.org/datatype3.html, 3.1), plus our finer names."""
    upper = declared.upper()
    if "INT" in upper:
        return "bigint"
    if "BOOL" in upper:
        return "boolean"
    if "JSON" in upper:
        return "jsonb"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if not upper or "BLOB" in upper:
        return "any"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "double precision"
    if any(word in upper for word in ("DATE", "TIME")):
        return "timestamptz"
    return "numeric"


def round_trips(value: object) -> bool:
    """Whether numeric gives ``value`` (a decimal string) back spelled exactly as it is."""
    return (
        isinstance(value, str)
        and _DECIMAL.fullmatch(value) is not None
        and not (value.startswith("-") and not value.strip("-0."))
    )


def column_kind(name: str, declared: str, values: Callable[[], Iterator[object]]) -> str:
    """The PostgreSQL type that keeps this column's values exactly (the module's rules);
    ``values()`` iterates over the column's values, read only when the type depends on them."""
    kind = _affinity(declared)
    if kind == "text" and DECIMAL_WORDS & set(name.lower().split("_")):
        seen = False
        for value in values():
            if value is None:
                continue
            if not round_trips(value):
                return "text"
            seen = True
        return "numeric" if seen else "text"
    if kind == "any":
        for value in values():
            if value is not None:
                return {bytes: "bytea", str: "text", int: "bigint", float: "double precision"}[
                    type(value)
                ]
        return "text"
    return kind


def _generated(table: str, sql: str, name: str) -> tuple[str, tuple[str, ...]]:
    """The column and JSON path of a generated column defined ``json_extract(col, '$...')``."""
    match = re.search(
        rf'(?:"{re.escape(name)}"|\b{re.escape(name)}\b)[^,]*?\bAS\s*\(', sql, re.I | re.S
    )
    expression = None
    if match:
        depth, start = 1, match.end()
        for end in range(start, len(sql)):
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            if depth == 0:
                expression = sql[start:end]
                break
    extract = _JSON_EXTRACT.fullmatch(expression or "")
    if extract is None:
        raise ImportFailed(
            f"{table}.{name} is generated by {(expression or '?').strip()!r}: the import carries "
            "generated columns of the form json_extract(column, '$.path') only; nothing was "
            "imported"
        )
    path, steps, at = extract["path"], [], 1
    while at < len(path):
        step = _PATH_STEP.match(path, at)
        if step is None:
            raise ImportFailed(
                f"{table}.{name}: the JSON path {path!r} is not one the import can translate; "
                "nothing was imported"
            )
        steps.append(step["quoted"] if step["quoted"] is not None else step["key"] or step["index"])
        at = step.end()
    return extract["column"], tuple(steps)


def _where(table: str, index: str, sql: str | None, columns: set[str]) -> str | None:
    """A partial index's WHERE, if it is plain comparisons of the table's own columns."""
    if not sql:
        return None
    found = re.search(r"\bWHERE\b(.*)$", sql, re.I | re.S)
    if found is None:
        return None
    out, at, text = [], 0, found[1].strip().rstrip(";")
    while at < len(text):
        token = _WHERE_TOKEN.match(text, at)
        if token is None or (
            token["word"]
            and token["word"].lower() not in _WHERE_KEYWORDS
            and token["word"] not in columns
            and not token["word"].isdigit()
        ):
            raise ImportFailed(
                f"the index {index} on {table} is partial on {text!r}, which the import does not "
                "translate; nothing was imported"
            )
        word = token["word"]
        out.append(quoted(word) if word in columns else token[0].strip())
        at = token.end()
    return " ".join(out)


def _indexes(conn: sqlite3.Connection, table: str, columns: set[str]) -> Iterator[Index]:
    for _, name, unique, origin, _ in conn.execute(f"PRAGMA index_list({quoted(table)})"):
        if origin == "pk":
            continue
        keys = []
        for row in conn.execute(f"PRAGMA index_xinfo({quoted(name)})"):
            if not row[5]:  # the key columns, not the rowid that ends every index entry
                continue
            if row[2] is None:
                raise ImportFailed(
                    f"the index {name} on {table} is on an expression, which the import does "
                    "not translate; nothing was imported"
                )
            keys.append(quoted(row[2]) + (" DESC" if row[3] else ""))
        sql = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
        ).fetchone()
        where = _where(table, name, sql[0] if sql else None, columns)
        yield Index(name, bool(unique), tuple(keys), where)


def read_tables(
    conn: sqlite3.Connection, names: list[str], kinds: dict[tuple[str, str], str]
) -> list[Table]:
    """The definitions of the tables ``names``; ``kinds`` gives each non-generated column's
    PostgreSQL type (decided from its values by the caller, with :func:`column_kind`)."""
    tables = []
    for name in names:
        sql = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()[0]
        columns, key = [], []
        for _, column, declared, not_null, _, pk, hidden in sorted(
            conn.execute(f"PRAGMA table_xinfo({quoted(name)})"), key=lambda r: r[0]
        ):
            if hidden in (2, 3):
                if _affinity(declared) != "text":
                    raise ImportFailed(
                        f"{name}.{column} is a generated column of type {declared or 'none'}: "
                        "the import carries TEXT generated columns only; nothing was imported"
                    )
                source, path = _generated(name, sql, column)
                columns.append(Column(column, declared, "text", False, source, path))
                continue
            columns.append(Column(column, declared, kinds[(name, column)], bool(not_null)))
            if pk:
                key.append((pk, column))
        names_held = {c.name for c in columns}
        has_rowid = re.search(r"\bWITHOUT\s+ROWID\b", sql, re.I) is None
        rowid = next((c for c in columns if [c.name] == [k for _, k in key]), None)
        integer = rowid is not None and rowid.declared.upper() == "INTEGER"
        identity = rowid.name if rowid and integer and has_rowid else None
        above = 0
        if identity and "AUTOINCREMENT" in sql.upper():
            found = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)
            ).fetchone()
            above = found[0] if found and type(found[0]) is int else 0
        for column in columns:
            if column.generated and column.generated_from not in names_held:
                raise ImportFailed(
                    f"{name}.{column.name} reads {column.generated_from}, not a column of "
                    f"{name}; nothing was imported"
                )
        tables.append(
            Table(
                name,
                tuple(columns),
                tuple(c for _, c in sorted(key)),
                tuple(_indexes(conn, name, names_held)),
                has_rowid,
                identity,
                above,
            )
        )
    return tables


def _path(steps: tuple[str, ...]) -> str:
    return "ARRAY[" + ", ".join("'" + s.replace("'", "''") + "'" for s in steps) + "]::text[]"


def create_statements(table: Table) -> list[str]:
    """CREATE TABLE and CREATE INDEX for ``table`` in PostgreSQL."""
    parts = []
    for column in table.columns:
        if column.generated:
            assert column.path is not None and column.generated_from is not None
            expression = f"{quoted(column.generated_from)} #>> {_path(column.path)}"
            parts.append(f"{quoted(column.name)} text GENERATED ALWAYS AS ({expression}) STORED")
        else:
            null = " NOT NULL" if column.not_null else ""
            if column.name == table.identity:
                null = " GENERATED BY DEFAULT AS IDENTITY"
            parts.append(f"{quoted(column.name)} {column.kind}{null}")
    if table.primary_key:
        parts.append(f"PRIMARY KEY ({', '.join(quoted(c) for c in table.primary_key)})")
    statements = [f"CREATE TABLE {quoted(table.name)} ({', '.join(parts)})"]
    for index in table.indexes:
        unique = "UNIQUE " if index.unique else ""
        where = f" WHERE {index.where}" if index.where else ""
        statements.append(
            f"CREATE {unique}INDEX {quoted(index.name)} ON {quoted(table.name)} "
            f"({', '.join(index.keys)}){where}"
        )
    return statements
