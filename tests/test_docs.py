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
import subprocess
import sys
import warnings
from pathlib import Path
from unittest import mock

import pytest

from persistence import Database
from tests.support import command_of, shell_blocks

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


@pytest.mark.parametrize("page", ["production.md", "troubleshooting.md"])
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
    "persistence.embedded": {"start", "stop", "url"},
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
    env = {
        k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("PYTEST_")
    }

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
    assert re.search(r"\n[0-2] of 2 measured targets hit; 9 not measured\n", report.stdout)
    assert chart.read_text().startswith("<svg") and ">get<" in chart.read_text()
    tables = run("bench.report", str(tmp_path / "run.json"), "--markdown", cwd=root)
    assert "| get | **persistence** |" in tables.stdout
    later = run("pytest", *one_group, "--benchmark-compare=0001", cwd=tmp_path)
    assert "Comparing against benchmarks from" in later.stderr
    assert "test_get[persistence] (NOW)" in later.stdout
    assert "test_get[persistence] (0001" in later.stdout
