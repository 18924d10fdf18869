"""``python -m persistence.queries``: print every statement the library runs."""

from __future__ import annotations

import argparse
import sys

from persistence._cli import into_pipe
from persistence.queries import statements


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m persistence.queries",
        description="Print every SQL statement the library runs, each under its name (the "
        "paged lists with every variant), as `-- NAME` then the statement.",
    ).parse_args(argv)
    with into_pipe():
        for name, statement in statements().items():
            print(f"-- {name}\n{statement};\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
