"""``python -m persistence.tokens status|encrypt|rotate|decrypt|new-key``: the sealed tokens.

Results go to stdout, logs to stderr. Exit codes: 0 done, 1 a token did not decrypt (``status``
too: a stored token the configured keys cannot open) or the database refused, 2 bad usage or
configuration (a missing or malformed key), 5 the database is unavailable, 6 the server refused
the credentials.
"""

from __future__ import annotations

import argparse
import logging
import sys

from persistence._cli import (
    AUTHENTICATION,
    FAILED,
    OK,
    UNAVAILABLE,
    USAGE,
    configure_logging,
    failed,
)
from persistence.database import Database
from persistence.errors import ConfigurationError, PersistenceError, TokenDecryptionFailed
from persistence.tokens import KEYS_VAR, new_key

EXIT_CODES = (OK, FAILED, USAGE, UNAVAILABLE, AUTHENTICATION)

COMMANDS = {
    "status": "how many rows are sealed under which key id, and how many are plain",
    "encrypt": "seal the plain rows under the current key",
    "rotate": "re-seal every row under the current key (then older keys can be removed)",
    "decrypt": "store the tokens in plain text again (only to migrate down past 0003)",
    "new-key": f"print a new id:base64key entry for {KEYS_VAR} (a secret: store it as one)",
}


def _counts(done: dict[str, int]) -> str:
    return (
        ", ".join(
            f"{n} under {key!r}" if key != "plain" else f"{n} plain" for key, n in done.items()
        )
        or "none"
    )


def main(argv: list[str] | None = None) -> int:
    configure_logging(logging.WARNING)
    parser = argparse.ArgumentParser(
        prog="python -m persistence.tokens",
        description="The Schwab tokens, sealed at rest with AES-256-GCM. Results go to stdout, "
        "logs to stderr.",
        epilog="exit codes: 0 done, 1 decryption or database error (status: a stored token the "
        "keys cannot open), 2 usage or configuration, 5 database unavailable, 6 credentials "
        "refused",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in COMMANDS.items():
        command = commands.add_parser(name, help=text, description=text)
        if name == "new-key":
            command.add_argument("id", nargs="?", help="the key's id (default: k + today's date)")
        else:
            command.add_argument(
                "--database-url", help="default: DATABASE_URL, else the embedded server"
            )
    args = parser.parse_args(argv)
    try:
        if args.command == "new-key":
            print(new_key(args.id))
            return OK
        with Database.connect(args.database_url, min_size=1, max_size=1) as db:
            if args.command == "status":
                counts = db.schwab_auth.status()
                print(f"rows: {_counts(counts)}")
                ring = db.token_keyring
                print(
                    "current key: "
                    + (repr(ring.current) if ring else "none configured")
                    + (f" (ring: {', '.join(ring.ids)})" if ring else "")
                )
                sealed = any(key != "plain" for key in counts)
                if sealed:
                    try:
                        db.schwab_auth.load()  # opens the stored tokens, or says why not
                    except (TokenDecryptionFailed, ConfigurationError) as exc:
                        print(
                            f"warning: the stored tokens cannot be opened: {exc}", file=sys.stderr
                        )
                        return FAILED
            elif args.command == "encrypt":
                print(f"sealed under the current key: {_counts(db.schwab_auth.encrypt())}")
            elif args.command == "rotate":
                done = db.schwab_auth.rotate()
                current = db.token_keyring.current if db.token_keyring else None
                print(f"re-sealed under {current!r}: {_counts(done)}")
            else:
                done = db.schwab_auth.decrypt()
                print(f"stored in plain text: {_counts(done)}")
    except PersistenceError as exc:
        return failed(exc)
    return OK


if __name__ == "__main__":
    sys.exit(main())
