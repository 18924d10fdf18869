"""Every exception the library raises. psycopg's own exceptions never leave the public API."""

from __future__ import annotations


class PersistenceError(Exception):
    """Base class of every error raised by persistence."""


class ConfigurationError(PersistenceError):
    """A setting or the database URL is invalid; raised before any connection is tried."""


class DatabaseUnavailable(PersistenceError):
    """The server cannot be reached, or an operation did not finish within its timeout."""


class CommitNotReplicated(DatabaseUnavailable):
    """A commit on this server that no synchronous standby confirmed: a failover may lose it."""


class AuthenticationFailed(DatabaseUnavailable):
    """The server refused the credentials of the connection settings."""


class ValidationError(PersistenceError, ValueError):
    """A value breaks a domain rule or does not fit its column; nothing was written."""


class NotFound(PersistenceError, LookupError):
    """The requested row does not exist."""


class Conflict(PersistenceError):
    """The operation conflicts with data already stored."""


class InvalidTransition(Conflict):
    """A trade, execution or queued event cannot move from its state to the requested one."""


class TokenDecryptionFailed(PersistenceError):
    """Stored Schwab tokens did not decrypt: a wrong or missing key, or changed bytes."""


class MigrationError(PersistenceError):
    """Migrations could not be loaded, planned or applied."""


class MigrationFailed(MigrationError):
    """A migration's SQL failed; its transaction was rolled back and history is unchanged."""


class MigrationDrift(MigrationError):
    """The applied history and the migration files disagree; nothing was run."""


class MigrationLockTimeout(MigrationError, DatabaseUnavailable):
    """Another runner held the migration lock for longer than the lock timeout."""


class ConcurrencyConflict(Conflict):
    """A stale expected sequence or checkpoint; the stored one is ``actual_sequence``."""

    def __init__(self, message: str, actual_sequence: int | None = None) -> None:
        super().__init__(message)
        self.actual_sequence = actual_sequence


class EventsCompacted(NotFound):
    """The events asked for were deleted by compaction: load the snapshot first."""
