"""Verifying the third layout's other tables and checkpoints against the file, opened again.

Every carried row is read anew from the file, without ``layout3_tables``' conversion, and every
stored row from PostgreSQL; each side's values are put in one comparable form (a decimal by its
spelling, a double by its repr, JSON by value and number spelling, a time as its UTC instant)
and the two tables compared as multisets of row digests, so neither side's order matters and
generated columns are compared as PostgreSQL computed them. A checkpoint is compared with its
table's row.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from persistence.import_sqlite._layout import Run
from persistence.import_sqlite._report import ImportFailed, Progress
from persistence.import_sqlite._source import open_text
from persistence.import_sqlite.convert import shown, to_datetime
from persistence.import_sqlite.layout3_json import Number, canonical
from persistence.import_sqlite.layout3_schema import Table, quoted
from persistence.import_sqlite.layout3_tables import Tables

__all__ = ["verify_tables"]


def _frozen(value: Any) -> Any:
    """A parsed JSON value as a hashable, comparable value (numbers by jsonb's spelling)."""
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, _frozen(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("array", tuple(_frozen(v) for v in value))
    if isinstance(value, Number):
        return ("number", str(value))
    return value


def _normal(kind: str, value: Any, *, stored: bool) -> Any:
    """A value, from the file (``stored`` False) or PostgreSQL, in one comparable form: a
    decimal by its spelling, so that 1.50 stored as 1.5 differs."""
    if value is None:
        return None
    if kind == "numeric":
        return value if isinstance(value, str) else format(Decimal(value), "f")
    if kind == "double precision":
        return repr(float(value))
    if kind == "boolean":
        return bool(value) if stored or value in (0, 1) else ("not boolean", value)
    if kind == "jsonb":
        return _frozen(canonical(value))
    if kind == "timestamptz":
        moment = value if stored else to_datetime("", value)[0]
        assert isinstance(moment, datetime)
        return moment.astimezone(UTC).isoformat()
    if kind == "bytea":
        return bytes(value).hex()
    return value


def _digest(values: tuple[Any, ...]) -> bytes:
    return hashlib.blake2b(repr(values).encode("utf-8", "surrogateescape"), digest_size=16).digest()


def verify_tables(run: Run, data: Tables) -> dict[str, str]:
    """Compare every carried row and checkpoint with the file, opened again."""
    verified = {}
    with closing(open_text(run.path)) as conn:
        for table in data.tables:
            verified[table.name] = _verify_table(run, conn, table, data)
        for name, _, _, source in data.checkpoints:
            want = conn.execute(f"SELECT * FROM {quoted(source)}").fetchone()
            got = run.target.execute(
                "SELECT position, version FROM checkpoints WHERE name = %s", (name,)
            ).fetchone()
            columns = [d[0] for d in conn.execute(f"SELECT * FROM {quoted(source)}").description]
            version = next((c for c in columns if c.endswith("version")), None)
            expected = (
                want[columns.index("last_rowid")],
                want[columns.index(version)] if version else None,
            )
            if got is None or tuple(got) != expected:
                raise ImportFailed(
                    f"verification failed: checkpoint {name} is {got} in PostgreSQL and "
                    f"{expected} in {source}; nothing was imported"
                )
            verified[f"checkpoint {name}"] = (
                f"position {expected[0]} (= the event's rowid), version {expected[1]}, from "
                f"{source}, re-read"
            )
    return verified


def _verify_table(run: Run, conn: sqlite3.Connection, table: Table, data: Tables) -> str:
    width, left_out = table.key_width, data.left_out[table.name]
    kinds = [c.kind for c in table.columns]
    file_rows: Counter[bytes] = Counter()
    for row in conn.execute(table.select()):
        if (row[0] if width == 1 else tuple(row[:width])) in left_out:
            continue
        file_rows[
            _digest(
                tuple(_normal(k, v, stored=False) for k, v in zip(kinds, row[width:], strict=True))
            )
        ] += 1
    selected = ", ".join(
        f"{quoted(c.name)}::text" if c.kind == "jsonb" else quoted(c.name) for c in table.columns
    )
    compared = 0
    bar = Progress(data.inserted[table.name], run.progress, f"{table.name}: verified")
    with run.target.cursor(name="persistence_import_verify_table") as cursor:
        cursor.itersize = 10_000
        cursor.execute(f"SELECT {selected} FROM {quoted(table.name)}")
        for stored in cursor:
            digest = _digest(
                tuple(_normal(k, v, stored=True) for k, v in zip(kinds, stored, strict=True))
            )
            if not file_rows[digest]:
                raise ImportFailed(
                    f"verification failed: a row of {table.name} in PostgreSQL has no equal row "
                    f"in the file ({shown('', stored)}); nothing was imported"
                )
            file_rows[digest] -= 1
            compared += 1
            if not compared % 10_000:
                bar.update(compared)
    bar.update(compared, final=True)
    if compared != data.inserted[table.name] or +file_rows:
        raise ImportFailed(
            f"verification failed: {table.name} has {compared} rows in PostgreSQL for "
            f"{data.inserted[table.name]} inserted and {sum(file_rows.values())} rows of the "
            "file unmatched; nothing was imported"
        )
    return f"{compared} rows compared with the file, re-read, every column"
