"""``python -m persistence.health``: print a health report; the exit code is the verdict.

Exit codes: 0 healthy, 1 unhealthy (no database, or it failed), 2 bad usage or configuration,
3 degraded (reachable, but the schema is behind or drifted, or the pool is exhausted), 6 the
server refused the credentials (unhealthy too, but no restart or wait will fix it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime

from persistence._cli import AUTHENTICATION, USAGE, configure_logging, into_pipe
from persistence.database import Database
from persistence.errors import AuthenticationFailed, ConfigurationError, DatabaseUnavailable
from persistence.health import HealthReport, health_check

EXIT_CODES = {"healthy": 0, "unhealthy": 1, "degraded": 3}
EXIT_USAGE, EXIT_AUTHENTICATION = USAGE, AUTHENTICATION


def main(argv: list[str] | None = None) -> int:
    configure_logging(logging.WARNING)
    parser = argparse.ArgumentParser(
        prog="python -m persistence.health",
        description="Check the database. Exit 0 healthy, 1 unhealthy, 3 degraded.",
        epilog="exit codes: 0 healthy, 1 unhealthy, 2 usage or configuration, 3 degraded, "
        "6 the server refused the credentials",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--database-url", help="default: DATABASE_URL, else the embedded server")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    code: int | None = None
    try:
        with Database.connect(
            args.database_url,
            min_size=1,
            max_size=1,
            connect_timeout=args.timeout,
            acquire_timeout=args.timeout,
        ) as db:
            report = health_check(db, timeout=args.timeout)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseUnavailable as exc:
        report = HealthReport("unhealthy", datetime.now(UTC), error=str(exc))
        if isinstance(exc, AuthenticationFailed):
            code = EXIT_AUTHENTICATION
    with into_pipe():
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            print(f"status: {report.status}")
            for key, value in report.to_dict().items():
                if key != "status" and value not in (None, [], {}):
                    print(f"{key}: {value}")
    return EXIT_CODES[report.status] if code is None else code


if __name__ == "__main__":
    sys.exit(main())
