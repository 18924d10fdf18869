"""docs/architecture.md's "Adding a column, end to end", applied as written to a copy of the
checkout: its command run, its files written, its diffs applied with `git apply`, then a fresh
database migrated and the tests its last step names run in the copy."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from persistence.migrate import load_migrations, new_migration
from tests.support import (
    LOCAL,
    ROOT,
    create_database,
    drop_database,
    environment_without,
    run_as_written,
    with_database,
)

PAGE = ROOT / "docs" / "architecture.md"
SECTION = "## Adding a column, end to end"
# a fenced block, indented as a list item's may be: (indent, language, body)
FENCE = re.compile(r"^( *)```(\w+)\n(.*?)^\1```", flags=re.S | re.M)


def recipe() -> str:
    text = PAGE.read_text()
    section = text[text.index(SECTION) :]
    return section[: section.index("\n## ", len(SECTION))]


def recipe_blocks() -> list[tuple[str, str]]:
    """(language, body without the list item's indent) of each block, in order."""
    return [(lang, textwrap.dedent(body)) for _, lang, body in FENCE.findall(recipe())]


def file_of(block: str) -> str:
    """The path a file block names on its first line (`-- path` or `# path`)."""
    return block.splitlines()[0].lstrip("-# ").strip()


def patched_file(diff: str) -> str:
    (path,) = re.findall(r"^\+\+\+ b/(\S+)$", diff, flags=re.M)
    return path


def test_the_recipe_names_the_next_migration_and_its_diffs_apply_to_todays_files(
    tmp_path: Path,
) -> None:
    """Fast, no server: a new migration or an edit near a diff's lines fails here at once, with
    what to change in the recipe."""
    blocks = recipe_blocks()
    kinds = [lang for lang, _ in blocks]
    assert kinds == ["sh", "sql", "sql", "diff", "diff", "diff", "python", "sh"], kinds
    # the names `migrate new` gives, made by the same code in a copy of migrations/
    migrations = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", migrations)
    description = re.search(r'migrate new "([^"]+)"', blocks[0][1])
    assert description, blocks[0][1]
    made = [
        f"migrations/{p.name}" for p in new_migration(description[1], migrations_dir=migrations)
    ]
    named = [file_of(body) for lang, body in blocks if lang == "sql"]
    newest = load_migrations()[-1].path.name.removesuffix(".up.sql")
    assert named == made, f"migrations/ ends at {newest}: the recipe should name {made}"
    assert f"today `{newest}`" in recipe(), f"the recipe should say the newest is {newest}"
    for lang, diff in blocks:
        if lang == "diff":
            target = tmp_path / patched_file(diff)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / patched_file(diff), target)
            checked = subprocess.run(
                ["git", "apply", "--check", "-"], input=diff, cwd=tmp_path, capture_output=True,
                text=True,
            )  # fmt: skip
            assert checked.returncode == 0, f"{patched_file(diff)}: {checked.stderr}"


@pytest.mark.slow
@pytest.mark.db
def test_the_add_a_column_recipe_runs_as_written(admin_url: str, tmp_path: Path) -> None:
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(*LOCAL))
    fresh = create_database(admin_url, "persistence_recipe")
    # the copy's package and migrations, not this checkout's (installed in editable mode)
    env = {
        **environment_without("DATABASE_URL", "TEST_DATABASE_URL", "PERSISTENCE_*", "PYTEST_*"),
        "PYTHONPATH": str(copy),
        "DATABASE_URL": with_database(admin_url, fresh),
    }
    try:
        created: list[str] = []
        for lang, block in recipe_blocks():
            if lang == "sh":
                for ran in run_as_written(block, env, cwd=copy):
                    created += re.findall(
                        rf"^created {re.escape(str(copy))}/(\S+)$", ran.printed, re.M
                    )
                    if ran.command.endswith("-m persistence.migrate"):
                        version = re.match(r"migrations/(\d+)_(\w+)\.up", created[0])
                        assert version, created
                        applied = f"applied {version[1]} {version[2].replace('_', ' ')}"
                        assert applied in ran.printed, ran.printed
            elif lang == "sql":
                assert file_of(block) in created, f"migrate new made {created}"
                (copy / file_of(block)).write_text(block)
            elif lang == "diff":
                done = subprocess.run(
                    ["git", "apply", "-"], input=block, cwd=copy, capture_output=True, text=True
                )
                assert done.returncode == 0, f"{patched_file(block)}: {done.stderr}"
            else:
                assert lang == "python" and not (copy / file_of(block)).exists()
                (copy / file_of(block)).write_text(block)
        named = re.findall(r"`(test_\w+\.py)`", recipe().split("7. ", 1)[1])
        assert "test_schwab_commission.py" in named and "test_migrate.py" in named, named
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", f"--basetemp={tmp_path / 'nested'}", "-q",
             *(f"tests/{name}" for name in named)],
            cwd=copy, env={**env, "TEST_DATABASE_URL": admin_url}, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-3000:]
        assert re.search(r"\b\d+ passed\b", tests.stdout) and " failed" not in tests.stdout
    finally:
        drop_database(admin_url, fresh)
