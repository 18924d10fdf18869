"""Migration files: their names, reading them, their checksums, and creating the next pair.

Files are ``NNNN_description.up.sql`` with a ``.down.sql`` beside each. A first line
``-- persistence:no-transaction`` runs that file outside a transaction (for
``CREATE INDEX CONCURRENTLY``); keep such a file to one statement.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import attrs

from persistence.config import Settings
from persistence.errors import MigrationError

__all__ = [
    "NO_TRANSACTION",
    "Migration",
    "checksum",
    "default_migrations_dir",
    "load_migrations",
    "new_migration",
]

NO_TRANSACTION = "-- persistence:no-transaction"
# Descriptions take letters, digits, "_" and "-" (as sqlx, golang-migrate and dbmate do); they
# start with a letter or digit, so that a name never reads as another version's.
_FILE_NAME = re.compile(
    r"^(?P<version>\d+)_(?P<description>[A-Za-z0-9][A-Za-z0-9_-]*)\.(?P<direction>up|down)\.sql$"
)


@attrs.frozen
class Migration:
    """One migration: its up SQL, its down SQL, and the checksum of the up file."""

    version: int
    description: str
    sql: str
    checksum: str
    no_transaction: bool
    path: Path
    down_sql: str | None = None
    down_no_transaction: bool = False
    down_path: Path | None = None


def checksum(data: bytes) -> str:
    """SHA-256 of a file's bytes with CRLF and CR line endings normalised to LF."""
    return hashlib.sha256(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")).hexdigest()


def default_migrations_dir() -> Path:
    """The migrations shipped in the wheel, else the checkout's ``migrations/`` folder."""
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def _read(path: Path) -> tuple[str, bool, bytes]:
    data = path.read_bytes()
    text = data.decode("utf-8")
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    return text, first.lower() == NO_TRANSACTION, data


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every migration in ``directory``, by version; odd file names and gaps in pairs are errors."""
    folder = directory or default_migrations_dir()
    if not folder.is_dir():
        raise MigrationError(
            f"migrations folder {folder} does not exist; pass --migrations-dir or set "
            "PERSISTENCE_MIGRATIONS_DIR"
        )
    found: dict[int, dict[str, Path]] = {}
    names: dict[int, str] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(
                f"{path}: a migration file is named NNNN_description.up.sql or .down.sql, the "
                "description of letters, digits, '_' and '-', starting with a letter or digit"
            )
        version = int(match["version"])
        if names.setdefault(version, match["description"]) != match["description"]:
            raise MigrationError(f"{path}: version {version} is used by two descriptions")
        found.setdefault(version, {})[match["direction"]] = path
    migrations = []
    for version in sorted(found):
        pair = found[version]
        if "up" not in pair:
            raise MigrationError(f"{pair['down']}: has no matching .up.sql file")
        up_text, up_no_tx, up_bytes = _read(pair["up"])
        down_text, down_no_tx, down_path = None, False, pair.get("down")
        if down_path is not None:
            down_text, down_no_tx, _ = _read(down_path)
        migrations.append(
            Migration(
                version=version,
                description=names[version].replace("_", " "),
                sql=up_text,
                checksum=checksum(up_bytes),
                no_transaction=up_no_tx,
                path=pair["up"],
                down_sql=down_text,
                down_no_transaction=down_no_tx,
                down_path=down_path,
            )
        )
    return migrations


def new_migration(description: str, *, migrations_dir: Path | None = None) -> tuple[Path, Path]:
    """Create the next numbered up/down pair; returns their paths."""
    slug = re.sub(r"[^a-z0-9]+", "_", description.lower()).strip("_")
    if not slug:
        raise MigrationError("a migration needs a description with letters or digits")
    folder = migrations_dir or Settings.from_env().migrations_dir or default_migrations_dir()
    folder.mkdir(parents=True, exist_ok=True)
    version = max((m.version for m in load_migrations(folder)), default=0) + 1
    up = folder / f"{version:04d}_{slug}.up.sql"
    down = folder / f"{version:04d}_{slug}.down.sql"
    up.write_text(f"-- {description}\n")
    down.write_text(f"-- revert: {description}\n")
    return up, down
