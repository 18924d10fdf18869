"""Versioned raw-SQL migrations: load, check, plan, apply, roll back, report.

Files are ``NNNN_description.up.sql`` with a ``.down.sql`` beside each; a first line
``-- persistence:no-transaction`` runs that file outside a transaction. Every run takes an
advisory lock on a connection of its own, checks the history against the files before anything
runs, and applies each migration together with its history row in one transaction.

The parts, as sqlx's migrate module has them:

- :mod:`~persistence.migrate.source`: the files (``Migration``, loading, checksums, ``new``);
- :mod:`~persistence.migrate.history`: the history table, and the files compared with it
  (drift checks, plans, each version's state), pure but for reading and writing the table;
- :mod:`~persistence.migrate.migrator`: running them under the lock (``apply``, ``rollback``,
  ``status``, ``verify``).
"""

from __future__ import annotations

from persistence.migrate.history import (
    HISTORY_TABLE,
    AppliedMigration,
    MigrationStatus,
    check_history,
    plan_down,
    plan_up,
    read_history,
)
from persistence.migrate.migrator import LOCK_KEY, RunResult, apply, rollback, status, verify
from persistence.migrate.source import (
    NO_TRANSACTION,
    Migration,
    checksum,
    default_migrations_dir,
    load_migrations,
    new_migration,
)

__all__ = [
    "HISTORY_TABLE",
    "LOCK_KEY",
    "NO_TRANSACTION",
    "AppliedMigration",
    "Migration",
    "MigrationStatus",
    "RunResult",
    "apply",
    "check_history",
    "checksum",
    "default_migrations_dir",
    "load_migrations",
    "new_migration",
    "plan_down",
    "plan_up",
    "read_history",
    "rollback",
    "status",
    "verify",
]
