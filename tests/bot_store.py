"""The bot's SQLite stores of the first two layouts, for the tests: the library's sample writers
(``persistence.import_sqlite.sample1`` and ``sample2``), under the names the tests use."""

from persistence.import_sqlite.sample1 import COLUMNS, SCHEMA, many, row, write
from persistence.import_sqlite.sample2 import (
    BATCHING_SCHEMA,
    bot_record_fill,
    bot_settle,
    write_batching,
)

__all__ = [
    "BATCHING_SCHEMA",
    "COLUMNS",
    "SCHEMA",
    "bot_record_fill",
    "bot_settle",
    "many",
    "row",
    "write",
    "write_batching",
]
