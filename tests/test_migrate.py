"""The migration runner against a real server: apply, roll back, drift, concurrency, failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import psycopg
import pytest

from persistence import (
    MigrationDrift,
    MigrationError,
    MigrationFailed,
    MigrationLockTimeout,
    Settings,
    migrate,
)
from persistence.migrate import LOCK_KEY, checksum, default_migrations_dir, load_migrations
from tests.support import environment_without, postgres_binary

SHIPPED = default_migrations_dir()
SHIPPED_VERSIONS = [m.version for m in load_migrations()]
LATEST = SHIPPED_VERSIONS[-1]


def add_migration(folder: Path, offset: int, name: str, up: str, down: str | None = None) -> str:
    """Write migration LATEST + offset (down too, when given); returns its file stem."""
    stem = f"{LATEST + offset:04d}_{name}"
    (folder / f"{stem}.up.sql").write_text(up)
    if down is not None:
        (folder / f"{stem}.down.sql").write_text(down)
    return stem


def cli(
    *args: str, url: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = environment_without("DATABASE_URL", "PERSISTENCE_MIGRATIONS_DIR")
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "persistence.migrate", *args, "--database-url", url],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def history(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT version, checksum FROM schema_migrations ORDER BY version"
        ).fetchall()


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def pg_dump_schema(url: str) -> str:
    dump = subprocess.run(
        [
            postgres_binary(url, "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--restrict-key=fixed",
            "-d",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(line for line in dump.splitlines() if not line.startswith("-- Dumped"))


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    """A copy of the shipped migrations that a test may extend or edit."""
    folder = tmp_path / "migrations"
    shutil.copytree(SHIPPED, folder)
    return folder


def test_cli_creates_the_schema_then_has_nothing_to_do(empty_database_url: str) -> None:
    first = cli(url=empty_database_url)
    assert first.returncode == 0, first.stderr
    assert "applied 0001 initial schema" in first.stdout
    assert {"trades", "schwab_auth", "schema_migrations"} <= tables(empty_database_url)
    second = cli(url=empty_database_url)
    assert second.returncode == 0
    assert "nothing to do" in second.stdout
    status = cli("status", "--json", url=empty_database_url)
    rows = json.loads(status.stdout)
    assert [row["state"] for row in rows] == ["applied"] * len(load_migrations())
    assert cli("verify", url=empty_database_url).returncode == 0


def test_verify_reports_pending_with_its_exit_code(empty_database_url: str) -> None:
    result = cli("verify", url=empty_database_url)
    assert result.returncode == 4
    assert "pending" in result.stderr


def test_dry_run_prints_sql_and_changes_nothing(empty_database_url: str) -> None:
    result = cli("up", "--dry-run", url=empty_database_url)
    assert result.returncode == 0
    assert "CREATE TABLE trades" in result.stdout
    assert "trades" not in tables(empty_database_url)


def test_up_down_up_gives_the_same_schema(empty_database_url: str) -> None:
    settings = Settings(url=empty_database_url)
    migrate.apply(settings)
    first = pg_dump_schema(empty_database_url)
    reverted = migrate.rollback(settings, target=0)
    assert [m.version for m in reverted.migrations] == sorted(
        (m.version for m in load_migrations()), reverse=True
    )
    assert tables(empty_database_url) == {"schema_migrations"}
    assert history(empty_database_url) == []
    migrate.apply(settings)
    assert pg_dump_schema(empty_database_url) == first


def test_down_steps_and_up_to(empty_database_url: str, migrations_dir: Path) -> None:
    add_migration(
        migrations_dir, 1, "add_notes", "CREATE TABLE notes (id int);\n", "DROP TABLE notes;\n"
    )
    settings = Settings(url=empty_database_url, migrations_dir=migrations_dir)
    assert [
        m.version for m in migrate.apply(settings, target=LATEST).migrations
    ] == SHIPPED_VERSIONS
    assert [m.version for m in migrate.apply(settings).migrations] == [LATEST + 1]
    assert [m.version for m in migrate.rollback(settings, steps=1).migrations] == [LATEST + 1]
    assert "notes" not in tables(empty_database_url)
    assert [v for v, _ in history(empty_database_url)] == SHIPPED_VERSIONS


@pytest.mark.slow
def test_eight_runners_at_once_apply_each_migration_once(empty_database_url: str) -> None:
    environment = environment_without("DATABASE_URL")
    runners = [
        subprocess.Popen(
            [sys.executable, "-m", "persistence.migrate", "--database-url", empty_database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for _ in range(8)
    ]
    outputs = [runner.communicate(timeout=120) for runner in runners]
    assert [runner.returncode for runner in runners] == [0] * 8, [err for _, err in outputs]
    applied_lines = sum(out.count("applied 0001") for out, _ in outputs)
    assert applied_lines == 1  # one runner applied everything; the others found nothing to do
    assert sum("nothing to do" in out for out, _ in outputs) == 7
    assert [v for v, _ in history(empty_database_url)] == [m.version for m in load_migrations()]


def test_failing_migration_leaves_nothing_and_names_the_line(
    empty_database_url: str, migrations_dir: Path
) -> None:
    broken = add_migration(
        migrations_dir,
        1,
        "broken",
        "CREATE TABLE half_done (id int);\n"
        "INSERT INTO half_done VALUES (1);\n"
        "SELECT no_such_column FROM half_done;\n",
        "DROP TABLE half_done;\n",
    )
    migrate.apply(Settings(url=empty_database_url))
    before = history(empty_database_url)
    result = cli(url=empty_database_url, env={"PERSISTENCE_MIGRATIONS_DIR": str(migrations_dir)})
    assert result.returncode == 1
    assert f"{broken}.up.sql, line 3" in result.stderr
    assert "no_such_column" in result.stderr
    assert "half_done" not in tables(empty_database_url)
    assert history(empty_database_url) == before


def test_edited_applied_migration_is_refused_by_migrate_and_verify(
    empty_database_url: str, migrations_dir: Path
) -> None:
    settings = Settings(url=empty_database_url, migrations_dir=migrations_dir)
    migrate.apply(settings)
    edited = migrations_dir / "0001_initial_schema.up.sql"
    edited.write_text(edited.read_text() + "\n-- a harmless-looking edit\n")
    with pytest.raises(MigrationDrift, match=r"0001_initial_schema\.up\.sql was changed"):
        migrate.apply(settings)
    env = {"PERSISTENCE_MIGRATIONS_DIR": str(migrations_dir)}
    for command in ([], ["verify"]):
        result = cli(*command, url=empty_database_url, env=env)
        assert result.returncode == 3, result.stderr
        assert "0001_initial_schema" in result.stderr + result.stdout


def test_line_endings_do_not_change_the_checksum() -> None:
    assert checksum(b"SELECT 1;\r\nSELECT 2;\r\n") == checksum(b"SELECT 1;\nSELECT 2;\n")
    assert checksum(b"SELECT 1;\n") != checksum(b"SELECT 2;\n")


def test_database_ahead_of_the_code_is_refused(
    empty_database_url: str, migrations_dir: Path, tmp_path: Path
) -> None:
    add_migration(
        migrations_dir, 1, "extra", "CREATE TABLE extra (id int);\n", "DROP TABLE extra;\n"
    )
    migrate.apply(Settings(url=empty_database_url, migrations_dir=migrations_dir))
    with pytest.raises(MigrationDrift, match=rf"version {LATEST + 1} .* no file"):
        migrate.apply(Settings(url=empty_database_url))


def test_out_of_order_migration_is_refused(empty_database_url: str, migrations_dir: Path) -> None:
    add_migration(
        migrations_dir, 2, "later", "CREATE TABLE later (id int);\n", "DROP TABLE later;\n"
    )
    settings = Settings(url=empty_database_url, migrations_dir=migrations_dir)
    migrate.apply(settings)
    forgotten = add_migration(
        migrations_dir,
        1,
        "forgotten",
        "CREATE TABLE forgotten (id int);\n",
        "DROP TABLE forgotten;\n",
    )
    with pytest.raises(MigrationDrift, match=rf"{forgotten}\.up\.sql was never applied"):
        migrate.apply(settings)
    assert "forgotten" not in tables(empty_database_url)


def test_no_transaction_migration_can_create_an_index_concurrently(
    empty_database_url: str, migrations_dir: Path
) -> None:
    add_migration(
        migrations_dir,
        1,
        "index_symbols",
        "-- persistence:no-transaction\n"
        "CREATE INDEX CONCURRENTLY trades_symbol_idx ON trades (onchain_input_symbol);\n",
        "-- persistence:no-transaction\nDROP INDEX CONCURRENTLY trades_symbol_idx;\n",
    )
    settings = Settings(url=empty_database_url, migrations_dir=migrations_dir)
    assert load_migrations(migrations_dir)[-1].no_transaction
    migrate.apply(settings)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('trades_symbol_idx')").fetchone() == (
            "trades_symbol_idx",
        )
    migrate.rollback(settings, steps=1)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('trades_symbol_idx')").fetchone() == (None,)


def test_a_held_lock_times_out_and_is_released_afterwards(empty_database_url: str) -> None:
    holder = psycopg.connect(empty_database_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        with pytest.raises(MigrationLockTimeout, match="held the lock"):
            migrate.apply(Settings(url=empty_database_url, migration_lock_timeout=0.1))
        result = cli(url=empty_database_url, env={"PERSISTENCE_MIGRATION_LOCK_TIMEOUT": "0.1"})
        assert result.returncode == 5
    finally:
        holder.close()
    assert migrate.apply(Settings(url=empty_database_url)).migrations
    with psycopg.connect(empty_database_url) as conn:
        held = conn.execute(  # pg_locks is the whole server's: other tests' databases too
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
    assert held == (0,)


def test_ddl_lock_timeout_fails_fast_behind_a_busy_table(
    empty_database_url: str, migrations_dir: Path
) -> None:
    settings = Settings(url=empty_database_url, ddl_lock_timeout=0.1)
    migrate.apply(settings)
    add_migration(
        migrations_dir,
        1,
        "alter",
        "ALTER TABLE trades ADD COLUMN note text;\n",
        "ALTER TABLE trades DROP COLUMN note;\n",
    )
    with psycopg.connect(empty_database_url) as busy:
        busy.execute("SELECT count(*) FROM trades")  # holds ACCESS SHARE until rollback
        with pytest.raises(MigrationFailed, match="lock timeout"):
            migrate.apply(
                Settings(
                    url=empty_database_url, migrations_dir=migrations_dir, ddl_lock_timeout=0.1
                )
            )
    assert [v for v, _ in history(empty_database_url)] == SHIPPED_VERSIONS


def test_rolling_back_without_a_down_file_is_refused(
    empty_database_url: str, migrations_dir: Path
) -> None:
    add_migration(migrations_dir, 1, "one_way", "CREATE TABLE one_way (id int);\n")
    settings = Settings(url=empty_database_url, migrations_dir=migrations_dir)
    migrate.apply(settings)
    with pytest.raises(MigrationError, match=r"no \.down\.sql"):
        migrate.rollback(settings, steps=1)


def test_new_creates_the_next_numbered_pair(migrations_dir: Path) -> None:
    up, down = migrate.new_migration("Add fee column!", migrations_dir=migrations_dir)
    stem = f"{LATEST + 1:04d}_add_fee_column"
    assert (up.name, down.name) == (f"{stem}.up.sql", f"{stem}.down.sql")
    assert [m.version for m in load_migrations(migrations_dir)] == [*SHIPPED_VERSIONS, LATEST + 1]


def test_badly_named_file_is_an_error(migrations_dir: Path) -> None:
    (migrations_dir / "2_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_description"):
        load_migrations(migrations_dir)


def test_dashes_in_a_description_are_accepted(
    empty_database_url: str, migrations_dir: Path
) -> None:
    add_migration(
        migrations_dir, 1, "remove-categories_v2", "CREATE TABLE c (id int);\n", "DROP TABLE c;\n"
    )
    newest = load_migrations(migrations_dir)[-1]
    assert (newest.version, newest.description) == (LATEST + 1, "remove-categories v2")
    migrate.apply(Settings(url=empty_database_url, migrations_dir=migrations_dir))
    assert "c" in tables(empty_database_url)


@pytest.mark.parametrize(
    "name", ["0073_.up.sql", "0073_-x.up.sql", "0073_a.b.up.sql", "x_a.up.sql"]
)
def test_ambiguous_names_are_still_refused(migrations_dir: Path, name: str) -> None:
    (migrations_dir / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="letters, digits, '_' and '-'"):
        load_migrations(migrations_dir)


def test_every_shipped_migration_has_a_down() -> None:
    assert all(m.down_sql for m in load_migrations())


def test_the_application_statement_timeout_does_not_bound_migrations(
    empty_database_url: str, migrations_dir: Path
) -> None:
    add_migration(migrations_dir, 1, "slow", "SELECT pg_sleep(0.4);\n", "SELECT 1;\n")
    settings = Settings(url=empty_database_url, migrations_dir=migrations_dir)
    migrate.apply(attrs.evolve(settings, statement_timeout=0.1))
    assert [v for v, _ in history(empty_database_url)][-1] == LATEST + 1
    migrate.rollback(settings)
    with pytest.raises(MigrationFailed, match="statement timeout"):
        migrate.apply(attrs.evolve(settings, migration_statement_timeout=0.1))
    assert [v for v, _ in history(empty_database_url)] == SHIPPED_VERSIONS


def test_down_states_each_step_once_naming_the_down_file(empty_database_url: str) -> None:
    assert cli("up", url=empty_database_url).returncode == 0
    down = cli("down", url=empty_database_url)
    assert down.returncode == 0, down.stderr
    assert down.stdout.count(f"reverted {LATEST:04d}") == 1
    assert "up.sql" not in down.stderr and "reverting" not in down.stderr
    verbose = cli("-v", "up", url=empty_database_url)
    assert verbose.stdout.count(f"applied {LATEST:04d}") == 1
    assert ".up.sql" in verbose.stderr  # the step's log line, on stderr only with -v
    reverted = cli("-v", "down", url=empty_database_url)
    assert ".down.sql" in reverted.stderr and ".up.sql" not in reverted.stderr
