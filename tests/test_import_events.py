"""Importing the bot's third layout (its event store): exact JSON, rowid positions, refusals."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persistence import Settings
from persistence.import_sqlite import ImportFailed, Problem, import_sqlite
from persistence.import_sqlite.layout3_json import check_json
from persistence.import_sqlite.sample3 import SCHEMA, add_event, add_snapshot, make_sample
from tests.support import environment_without


def run(path: Path, url: str, **options: Any) -> tuple[Any, list[Problem]]:
    problems: list[Problem] = []
    result = import_sqlite(path, Settings.from_env(url=url), on_problem=problems.append, **options)
    return result, problems


def store(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    return conn


def events(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT position, aggregate_type, aggregate_id, sequence, payload::text "
            "FROM events ORDER BY position"
        ).fetchall()


def test_the_sample_imports_with_rowids_as_positions(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    make_sample(path)
    result, problems = run(path, empty_database_url)
    assert problems == []
    assert result.verified["_sqlx_migrations"].startswith("not carried")
    assert result.layout == "event store"
    assert result.tables["events"] == (7, 0, 7)  # its read models: test_import_read_models.py
    assert result.tables["snapshots"] == (2, 0, 2)
    with sqlite3.connect(path) as conn:
        want = conn.execute(
            "SELECT rowid, aggregate_type, aggregate_id, sequence FROM events ORDER BY rowid"
        ).fetchall()
    got = events(empty_database_url)
    assert [tuple(r[:4]) for r in got] == want  # interleaved aggregates, in rowid order
    assert ("Inventory", "main", 4) in [tuple(r[1:4]) for r in got]  # compacted: not a gap
    with psycopg.connect(empty_database_url) as conn:
        snap = conn.execute(
            "SELECT last_sequence, snapshot_version, taken_at::text FROM snapshots "
            "WHERE aggregate_type = 'Inventory'"
        ).fetchone()
        assert snap == (3, 1, "2026-03-01 12:00:00.123456+00")
        # a new append continues above the imported rowids, after the compacted snapshot
        appended = conn.execute(
            "SELECT position, sequence FROM append_events('Inventory', 'main', 4, "
            """'[["Deposited", "1", {"usdc": "1.000000"}, {}]]')"""
        ).fetchone()
        assert appended is not None and appended[0] > want[-1][0] and appended[1] == 5


def test_the_cli_names_the_third_layout(tmp_path: Path, empty_database_url: str) -> None:
    path = tmp_path / "bot.db"
    make_sample(path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "persistence.import_sqlite",
            str(path),
            "--report",
            str(tmp_path / "r.jsonl"),
            "--database-url",
            empty_database_url,
        ],
        capture_output=True,
        text=True,
        env=environment_without("DATABASE_URL"),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "holds the bot's third layout (the event store)" in done.stdout
    assert "events: read 7, 0 invalid, inserted 7" in done.stdout


BAD = [
    ('{"a": "x\\u0000y"}', "\\u0000"),
    ('{"a": "\\ud800"}', "lone surrogate"),
    ('{"a": 1, "a": 2}', "twice"),
    ("{not json", "is not JSON"),
    ('{"a": NaN}', "NaN"),
    ("[1, 2]", "not a JSON object"),
]


@pytest.mark.parametrize(("payload", "reason"), BAD)
def test_json_jsonb_would_alter_refuses_the_import(
    tmp_path: Path, empty_database_url: str, payload: str, reason: str
) -> None:
    path = tmp_path / "bot.db"
    with store(path) as conn:
        add_event(conn, "Position", "AAPL", 1, {"ok": 1})
        bad = add_event(conn, "Position", "TSLA", 1, payload)
    with pytest.raises(ImportFailed, match="nothing was imported"):
        run(path, empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    problems: list[Problem] = []
    with pytest.raises(ImportFailed):
        import_sqlite(path, Settings.from_env(url=empty_database_url), on_problem=problems.append)
    [problem] = problems
    assert (problem.table, problem.sqlite_id, problem.column) == ("events", bad, "payload")
    assert problem.value == "Position TSLA sequence 1"
    assert reason in problem.reason


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("aggregate_id", "", "must be text of 1 to 256 characters"),
        ("aggregate_id", "x" * 257, "must be text of 1 to 256 characters"),
        ("aggregate_id", "A\x00B", "NUL character"),
        ("aggregate_type", b"P", "must be text of 1 to 100 characters"),  # a blob
        ("event_type", "E" * 201, "must be text of 1 to 200 characters"),
        ("event_version", None, "must be text of 1 to 32 characters"),
        ("sequence", "one", "must be an integer from 1"),
        ("sequence", 0, "must be an integer from 1"),
    ],
)
def test_an_event_column_postgresql_refuses_is_named(
    tmp_path: Path, empty_database_url: str, column: str, value: Any, reason: str
) -> None:
    """Texts and sequences are checked by one SQLite expression per row (layout3_events)."""
    path = tmp_path / "bot.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA.replace("NOT NULL", ""))  # the bot's columns, unenforced
        add_event(conn, "Position", "AAPL", 1, {"n": 1})
        bad = add_event(conn, "Position", "TSLA", 1, {"n": 1})
        conn.execute(f"UPDATE events SET {column} = ? WHERE rowid = ?", (value, bad))
    problems: list[Problem] = []
    with pytest.raises(ImportFailed, match="nothing was imported"):
        import_sqlite(path, Settings.from_env(url=empty_database_url), on_problem=problems.append)
    [problem] = problems
    assert (problem.sqlite_id, problem.column) == (bad, column)
    assert reason in problem.reason
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)


def test_a_gap_not_explained_by_a_snapshot_refuses(tmp_path: Path, empty_database_url: str) -> None:
    path = tmp_path / "bot.db"
    with store(path) as conn:
        add_event(conn, "Position", "AAPL", 1, {})
        gap = add_event(conn, "Position", "AAPL", 3, {})
        start = add_event(conn, "Position", "TSLA", 3, {})
        add_snapshot(conn, "Position", "TSLA", 1, {})  # covers 1, not 2
    with pytest.raises(ImportFailed):
        _, problems = run(path, empty_database_url)
    _, problems = run(path, empty_database_url, skip_invalid=True)
    named = {(p.sqlite_id, p.column) for p in problems}
    assert named == {(gap, "sequence"), (start, "sequence")}
    assert events(empty_database_url) == []  # both aggregates left out whole


def test_skip_invalid_leaves_out_the_whole_aggregate(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    with store(path) as conn:
        add_event(conn, "Position", "AAPL", 1, {"n": 1})
        add_event(conn, "Position", "TSLA", 1, {"n": 1})
        add_event(conn, "Position", "AAPL", 2, '{"n": 1, "n": 2}')
        add_event(conn, "Position", "TSLA", 2, {"n": 2})
        add_snapshot(conn, "Position", "AAPL", 1, {"n": 1})
    result, problems = run(path, empty_database_url, skip_invalid=True)
    assert [p.value for p in problems] == ["Position AAPL sequence 2"]
    assert [r[2] for r in events(empty_database_url)] == ["TSLA", "TSLA"]
    assert result.tables["snapshots"] == (1, 0, 0)


def test_a_rowid_at_or_above_the_transaction_positions_is_refused(
    tmp_path: Path, empty_database_url: str
) -> None:
    path = tmp_path / "bot.db"
    with store(path) as conn:
        conn.execute(
            "INSERT INTO events (rowid, aggregate_type, aggregate_id, sequence, event_type, "
            "event_version, payload, metadata) VALUES (?, 'P', 'A', 1, 'E', '1', '{}', '{}')",
            (1 << 62,),
        )
    with pytest.raises(ImportFailed, match="transaction id << 20"):
        run(path, empty_database_url)


def test_numbers_jsonb_respells_are_noted(tmp_path: Path, empty_database_url: str) -> None:
    path = tmp_path / "bot.db"
    with store(path) as conn:
        add_event(conn, "P", "A", 1, '{"a": 1.0e2, "b": -0, "c": "1e5"}')
    _, problems = run(path, empty_database_url)
    assert [(p.kind, p.value) for p in problems] == [("note", "1.0e2"), ("note", "-0")]
    assert events(empty_database_url)[0][4] == '{"a": 100, "b": 0, "c": "1e5"}'


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.decimals(allow_nan=False, allow_infinity=False, places=6).map(
        lambda d: json.loads(str(d), parse_float=Decimal)  # as a JSON number, trailing zeros
    )
    | st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str)
    | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payloads=st.lists(st.dictionaries(TEXT, JSON, max_size=4), min_size=1, max_size=5))
def test_payloads_round_trip_exactly(
    tmp_path_factory: pytest.TempPathFactory, empty_database_url: str, payloads: list[Any]
) -> None:
    path = tmp_path_factory.mktemp("rt") / "bot.db"
    texts = [_json(p) for p in payloads]
    with store(path) as conn:
        for n, text in enumerate(texts):
            add_event(conn, "P", str(n % 2), n // 2 + 1, text)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('events')").fetchone() != (None,):
            conn.execute("DELETE FROM events; DELETE FROM snapshots")
    run(path, empty_database_url)  # verification compares every value and its spelling
    with psycopg.connect(empty_database_url) as conn:
        stored = conn.execute("SELECT payload FROM events ORDER BY position").fetchall()
    assert [json.loads(json.dumps(r[0])) for r in stored] == [json.loads(t) for t in texts]


def _json(value: Any) -> str:
    """JSON text with Decimals written as numbers, exactly (trailing zeros kept)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return format(value, "f")
    return json.dumps(value, ensure_ascii=False)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    order=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=30),
    compacted=st.dictionaries(st.integers(0, 3), st.integers(1, 4), max_size=3),
)
def test_rowid_order_holds_across_interleaved_and_compacted_aggregates(
    tmp_path_factory: pytest.TempPathFactory,
    empty_database_url: str,
    order: list[int],
    compacted: dict[int, int],
) -> None:
    """Appends to four aggregates in any interleaving; some compacted (a snapshot at sequence n,
    the events up to n deleted, as the bot's compaction leaves them)."""
    path = tmp_path_factory.mktemp("order") / "bot.db"
    with store(path) as conn:
        sequences = dict.fromkeys(range(4), 0)
        for aggregate in order:
            sequences[aggregate] += 1
            add_event(conn, "P", f"a{aggregate}", sequences[aggregate], {"n": len(order)})
        for aggregate, upto in compacted.items():
            if sequences[aggregate] >= upto:
                add_snapshot(conn, "P", f"a{aggregate}", upto, {"upto": upto})
                conn.execute(
                    "DELETE FROM events WHERE aggregate_id = ? AND sequence <= ?",
                    (f"a{aggregate}", upto),
                )
        want = conn.execute(
            "SELECT rowid, aggregate_type, aggregate_id, sequence FROM events ORDER BY rowid"
        ).fetchall()
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('events')").fetchone() != (None,):
            conn.execute("DELETE FROM events; DELETE FROM snapshots")
    _, problems = run(path, empty_database_url)
    assert problems == []
    assert [tuple(r[:4]) for r in events(empty_database_url)] == want


# numbers as the bot or another writer may spell them: some jsonb respells, one is not JSON
RAW_NUMBERS = ["1.5e+20", "1E-7", "1e5", "-0", "-0.0", "1.50", "0.1", "-12.5", "9" * 30, "NaN"]
PLAIN = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)  # repr: 1e-05 and 1e+16 among them
    | st.text(max_size=6),  # NUL and lone surrogates included: escaped below
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    value=st.dictionaries(st.text(max_size=3), PLAIN, max_size=4),
    compact=st.booleans(),
    ascii_only=st.booleans(),
    number=st.sampled_from(RAW_NUMBERS),
    twice=st.booleans(),
)
def test_the_fast_json_check_agrees_with_the_full_one(
    value: dict[str, Any], compact: bool, ascii_only: bool, number: str, twice: bool
) -> None:
    """The check's fast path (a text exactly as Python's or serde's encoder writes it) never
    passes what the full check refuses or notes: duplicate keys, NaN, escaped NULs and lone
    surrogates, exponents, negative zeros."""
    pairs = [*value.items(), ("n", "@number@"), *([("n", 1)] if twice else [])]
    keys, items = (":", ",") if compact else (": ", ", ")
    text = (
        "{"
        + items.join(
            json.dumps(k, ensure_ascii=ascii_only) + keys + json.dumps(v, ensure_ascii=ascii_only)
            for k, v in pairs
        )
        + "}"
    )
    text = text.replace('"@number@"', number)
    assert check_json(text) == check_json(text, fast=False)


_INDEXES = (
    "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), c.conname, c.contype "
    "FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid "
    "WHERE i.indrelid = 'events'::regclass ORDER BY 1"
)


def test_the_event_stores_indexes_end_as_the_migration_made_them(
    tmp_path: Path, empty_database_url: str, database_url: str
) -> None:
    """The import drops the indexes of an empty events table for its COPY and builds them again
    (layout3_events.drop_indexes); into a store already holding events it keeps them."""
    with psycopg.connect(database_url) as conn:
        want = conn.execute(_INDEXES).fetchall()
    assert len(want) == 3
    path = tmp_path / "bot.db"
    with store(path) as conn:
        add_event(conn, "Position", "AAPL", 1, {"n": 1})
        add_event(conn, "Position", "TSLA", 1, {"n": 1})
    run(path, empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute(_INDEXES).fetchall() == want
    # a store holding an event (appended: its position is above every rowid) keeps its indexes
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM events")
        conn.execute("""SELECT append_events('Other', 'x', 0, '[["Made", "1", {}, {}]]')""")
    run(path, empty_database_url)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute(_INDEXES).fetchall() == want
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (3,)


def test_positions_already_taken_refuse_the_import_before_anything_is_written(
    tmp_path: Path, empty_database_url: str
) -> None:
    """Checked before the events are written while checked: a second import of the same file
    finds its rowids taken and writes nothing more."""
    path = tmp_path / "bot.db"
    with store(path) as conn:
        add_event(conn, "Position", "AAPL", 1, {"n": 1})
        add_event(conn, "Position", "TSLA", 1, {"n": 1})
    run(path, empty_database_url)
    before = events(empty_database_url)
    with pytest.raises(ImportFailed, match=r"already holds 2 event\(s\) at positions up to"):
        run(path, empty_database_url)
    assert events(empty_database_url) == before
