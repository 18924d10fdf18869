"""What one statement costs the server: instructions per execution, counted by callgrind.

    python -m bench.server_instructions [--statements 100] [--only NAME]

Wall-clock figures of single appends on a small machine swing by a quarter from run to run;
the instructions the server's backend executes for a statement do not. This starts a scratch
PostgreSQL (``--bindir``, default ``pg_config --bindir``; as the ``postgres`` user when run by
root) in a temporary directory, migrates it, adds the comparison tables below, and restarts it
under ``valgrind --tool=callgrind --trace-children=yes``, which follows each forked backend.
Each variant then runs on two fresh connections, ``--statements`` one-event appends on the
first and twice that on the second; the difference of the two backends' counts, divided by
``--statements``, is the cost of one statement (connection start-up and the first executions
cancel out). ``fsync=off``: the flush is the kernel's, not the backend's, instructions.

Variants (each appends one event after the one its aggregate holds):

- ``append``: the library's ``APPEND_NEXT`` on ``events`` (its rules as column domains);
- ``append_as_0010``: ``APPEND_NEXT`` as it was until the fifth pass (docs/performance.md): the
  expectation as an ``EXISTS`` subquery of the event or of the snapshot, ``ON CONFLICT DO
  NOTHING``, and the aggregate's columns from the parameters;
- ``append_rules_as_check``: the same on a copy of ``events`` whose rules are migration 0008's
  one CHECK constraint;
- ``append_no_rules``: the same on a copy without any;
- ``append_as_0008``: migration 0008's one-event statement (a CTE that also returned the actual
  sequence on a conflict) on the CHECK copy: what an append cost before 0009;
- ``raw_identity``: the raw psycopg denominator of ``bench.events``: an ``INSERT`` with an
  identity position, no expectation check, no rules (not gap-free).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench import es_baselines as es
from persistence import Settings, migrate
from persistence.queries import event_store as sql

_COPY = "CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS INCLUDING INDEXES)"
_BASE_TYPES = (
    "ALTER TABLE {name} ALTER position TYPE bigint, ALTER sequence TYPE bigint, "
    "ALTER aggregate_type TYPE text, ALTER aggregate_id TYPE text, ALTER event_type TYPE text, "
    "ALTER event_version TYPE text, ALTER payload TYPE jsonb, ALTER metadata TYPE jsonb"
)
_CHECK_0008 = (
    "ALTER TABLE {name} ADD CONSTRAINT {name}_check CHECK (position >= 1 AND sequence >= 1 "
    "AND char_length(aggregate_type) BETWEEN 1 AND 100 AND char_length(aggregate_id) BETWEEN 1 "
    "AND 256 AND char_length(event_type) BETWEEN 1 AND 200 AND char_length(event_version) "
    "BETWEEN 1 AND 32 AND jsonb_typeof(payload) = 'object' AND jsonb_typeof(metadata) = 'object')"
)
# migration 0008's function (0009 dropped it), on the CHECK copy: the 0008 statement calls it
_MIGRATION_0008 = Path(__file__).parent.parent / "migrations" / "0008_events_one_check.up.sql"
_FUNCTION_0008 = _MIGRATION_0008.read_text().split("CREATE FUNCTION events_last_sequence", 1)[1]
_LAST_SEQUENCE_0008 = (
    "CREATE FUNCTION events_last_sequence"
    + _FUNCTION_0008.split("$$;", 1)[0].replace("FROM events e", "FROM events_as_check e")
    + "$$"
)
SETUP = (
    _COPY.format(name="events_as_check"),
    _BASE_TYPES.format(name="events_as_check"),
    _CHECK_0008.format(name="events_as_check"),
    _COPY.format(name="events_bare"),
    _BASE_TYPES.format(name="events_bare"),
    _LAST_SEQUENCE_0008,
    es.RAW_DDL,
)
# migration 0008's one-event append (persistence.queries.event_store at 1dc8a99), on the copy
APPEND_AS_0008 = (
    'WITH appended AS (INSERT INTO "events_as_check" AS e ("position", "aggregate_type", '
    '"aggregate_id", "sequence", "event_type", "event_version", "payload", "metadata") '
    "SELECT pg_current_xact_id()::text::bigint << 20, %(aggregate_type)s::text, "
    "%(aggregate_id)s::text, %(expected_sequence)s::bigint + 1, %(event_type)s::text, "
    "%(event_version)s::text, %(payload)s::jsonb, %(metadata)s::jsonb "
    "WHERE CASE WHEN %(expected_sequence)s::bigint = 0 "
    'THEN NOT EXISTS (SELECT FROM "snapshots" s WHERE s."aggregate_type" = %(aggregate_type)s '
    'AND s."aggregate_id" = %(aggregate_id)s) '
    'ELSE EXISTS (SELECT FROM "events_as_check" x WHERE x."aggregate_type" = %(aggregate_type)s '
    'AND x."aggregate_id" = %(aggregate_id)s AND x."sequence" = %(expected_sequence)s::bigint) '
    'OR EXISTS (SELECT FROM "snapshots" s WHERE s."aggregate_type" = %(aggregate_type)s '
    'AND s."aggregate_id" = %(aggregate_id)s '
    'AND s."last_sequence" = %(expected_sequence)s::bigint) '
    "END "
    'ON CONFLICT ON CONSTRAINT "events_as_check_pkey" DO NOTHING '
    'RETURNING e."position", e."recorded_at") '
    'SELECT "position", "recorded_at", NULL::bigint FROM appended '
    "UNION ALL SELECT NULL, NULL, events_last_sequence(%(aggregate_type)s, %(aggregate_id)s) "
    "WHERE NOT EXISTS (SELECT FROM appended)"
)
# APPEND_NEXT before the fifth pass (persistence.queries.event_store at 44bc867)
APPEND_AS_0010 = (
    'INSERT INTO "events" AS e ("position", "aggregate_type", "aggregate_id", "sequence", '
    '"event_type", "event_version", "payload", "metadata") '
    "SELECT pg_current_xact_id()::text::bigint << 20, %(aggregate_type)s::text, "
    "%(aggregate_id)s::text, %(expected_sequence)s::bigint + 1, %(event_type)s::text, "
    "%(event_version)s::text, %(payload)s::jsonb, %(metadata)s::jsonb "
    'WHERE EXISTS (SELECT FROM "events" x WHERE x."aggregate_type" = %(aggregate_type)s '
    'AND x."aggregate_id" = %(aggregate_id)s AND x."sequence" = %(expected_sequence)s::bigint) '
    'OR EXISTS (SELECT FROM "snapshots" s WHERE s."aggregate_type" = %(aggregate_type)s '
    'AND s."aggregate_id" = %(aggregate_id)s '
    'AND s."last_sequence" = %(expected_sequence)s::bigint) '
    'ON CONFLICT ON CONSTRAINT "events_pkey" DO NOTHING '
    'RETURNING e."position", e."recorded_at"'
)
RAW_IDENTITY = (
    f"INSERT INTO {es.RAW_TABLE} (aggregate_type, aggregate_id, sequence, event_type, "
    "event_version, payload, metadata) VALUES (%(aggregate_type)s, %(aggregate_id)s, "
    "%(expected_sequence)s + 1, %(event_type)s, %(event_version)s, %(payload)s::jsonb, "
    "%(metadata)s::jsonb) RETURNING position"
)


def _on(table: str) -> str:
    return sql.APPEND_NEXT.replace('"events"', f'"{table}"')


# name -> (the table its first event goes into, the statement measured)
VARIANTS: dict[str, tuple[str, str]] = {
    "append": ("events", sql.APPEND_NEXT),
    "append_as_0010": ("events", APPEND_AS_0010),
    "append_rules_as_check": ("events_as_check", _on("events_as_check")),
    "append_no_rules": ("events_bare", _on("events_bare")),
    "append_as_0008": ("events_as_check", APPEND_AS_0008),
    "raw_identity": (es.RAW_TABLE, RAW_IDENTITY),
}
_FIRST = (
    "INSERT INTO {table} (position, aggregate_type, aggregate_id, sequence, event_type, "
    "event_version, payload, metadata) VALUES (pg_current_xact_id()::text::bigint << 20, "
    "%(aggregate_type)s, %(aggregate_id)s, 1, %(event_type)s, %(event_version)s, "
    "%(payload)s::jsonb, %(metadata)s::jsonb)"
)
_RAW_FIRST = RAW_IDENTITY.replace("%(expected_sequence)s + 1", "1")


def _as_owner(command: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *command] if owner else command


@contextlib.contextmanager
def _server(bindir: Path, owner: str | None, statements: int) -> Iterator[Callable[..., Any]]:
    """A scratch cluster, set up and restarted under callgrind; yields ``count(name)``."""
    with tempfile.TemporaryDirectory(prefix="bench-server-instructions-") as tmp:
        root = Path(tmp)
        data, counts = root / "data", root / "counts"
        counts.mkdir()
        if owner:
            shutil.chown(root, owner)
            shutil.chown(counts, owner)

        def run(*command: str) -> None:
            subprocess.run(_as_owner(list(command), owner), check=True, capture_output=True)

        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        options = f"-c listen_addresses='' -k {root} -c fsync=off -c autovacuum=off"
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "120"]
        url = f"postgresql://postgres@/postgres?host={root}"
        run(*pg_ctl, "-o", options, "-l", str(root / "setup.log"), "start")
        try:
            migrate.apply(Settings(url=url))
            with psycopg.connect(url, autocommit=True) as conn:
                for statement in SETUP:
                    conn.execute(statement)
        finally:
            run(*pg_ctl, "-m", "fast", "stop")
        valgrind = [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            f"--callgrind-out-file={counts}/%p",
            str(bindir / "postgres"),
            "-D",
            str(data),
            *options.replace("'", "").split(),
        ]
        log = (root / "valgrind.log").open("w")
        server = subprocess.Popen(_as_owner(valgrind, owner), stdout=log, stderr=log)
        try:
            _wait_for(url)
            yield lambda name: _count(url, counts, name, statements)
        finally:
            server.terminate()  # SIGTERM: a smart shutdown
            server.wait(120)
            log.close()


def _wait_for(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _appends(url: str, name: str, statements: int) -> int:
    """``statements`` appends of the variant on a new connection; the backend's pid."""
    table, statement = VARIANTS[name]
    aggregate = f"{name}-{statements}-{es.run_prefix()}"
    params: dict[str, Any] = {
        "aggregate_type": es.AGGREGATE_TYPE,
        "aggregate_id": aggregate,
        "expected_sequence": 0,
        "event_type": es.EVENT_TYPE,
        "event_version": "1",
        "payload": json.dumps(es.payload(1)),
        "metadata": es.METADATA_JSON,
    }
    with psycopg.connect(url, autocommit=True) as conn:
        pid = conn.info.backend_pid
        conn.execute(_RAW_FIRST if table == es.RAW_TABLE else _FIRST.format(table=table), params)
        for sequence in range(2, statements + 2):
            params["expected_sequence"] = sequence - 1
            params["payload"] = json.dumps(es.payload(sequence))
            row = conn.execute(statement, params).fetchone()
            if row is None or row[0] is None:
                raise RuntimeError(f"{name}: append {sequence} inserted nothing")
    return pid


def _total(counts: Path, pid: int, timeout: float = 60.0) -> int:
    """The instructions callgrind counted in the backend ``pid`` (written when it exits)."""
    path = counts / str(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind count for backend {pid} in {counts}")


def _count(url: str, counts: Path, name: str, statements: int) -> float:
    short = _total(counts, _appends(url, name, statements))
    long = _total(counts, _appends(url, name, 2 * statements))
    return (long - short) / statements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=100)
    parser.add_argument("--only", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--bindir", type=Path, help="PostgreSQL's programs (pg_config --bindir)")
    args = parser.parse_args()
    bindir = args.bindir or Path(
        subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
    )
    owner = "postgres" if os.geteuid() == 0 else None  # the server refuses to run as root
    names = args.only or list(VARIANTS)
    with _server(bindir, owner, args.statements) as count:
        costs = {name: count(name) for name in names}
    raw = costs.get("raw_identity")
    print("| statement | server instructions per append | vs raw_identity |")
    print("|---|---|---|")
    for name, cost in costs.items():
        ratio = f"{cost / raw:.2f} x" if raw else ""
        print(f"| {name} | {cost:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
