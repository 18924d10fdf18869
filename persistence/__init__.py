"""persistence: the PostgreSQL persistence layer of the arbitrage bot.

from persistence import Database, Trade
with Database.connect() as db:          # DATABASE_URL, else the embedded server
    db.trades.insert(trade)

async with await AsyncDatabase.connect() as db:   # the same, for asyncio
    await db.trades.insert(trade)
"""

from persistence.config import Settings
from persistence.database import AsyncDatabase, AsyncTransaction, Database, Transaction
from persistence.errors import (
    AuthenticationFailed,
    CommitNotReplicated,
    ConcurrencyConflict,
    ConfigurationError,
    Conflict,
    DatabaseUnavailable,
    EventsCompacted,
    InvalidTransition,
    MigrationDrift,
    MigrationError,
    MigrationFailed,
    MigrationLockTimeout,
    NotFound,
    PersistenceError,
    TokenDecryptionFailed,
    ValidationError,
)
from persistence.event_models import NewEvent, RecordedEvent, Snapshot
from persistence.health import HealthReport, health_check
from persistence.models import (
    Accumulator,
    Execution,
    ExecutionLink,
    ExecutionStatus,
    Fill,
    Instruction,
    QueuedEvent,
    RecordedFill,
    SchwabAuth,
    Trade,
    TradeStatus,
    io_ratio,
    price_per_share_cents,
)

__all__ = [
    "Accumulator",
    "AsyncDatabase",
    "AsyncTransaction",
    "AuthenticationFailed",
    "CommitNotReplicated",
    "ConcurrencyConflict",
    "ConfigurationError",
    "Conflict",
    "Database",
    "DatabaseUnavailable",
    "EventsCompacted",
    "Execution",
    "ExecutionLink",
    "ExecutionStatus",
    "Fill",
    "HealthReport",
    "Instruction",
    "InvalidTransition",
    "MigrationDrift",
    "MigrationError",
    "MigrationFailed",
    "MigrationLockTimeout",
    "NewEvent",
    "NotFound",
    "PersistenceError",
    "QueuedEvent",
    "RecordedEvent",
    "RecordedFill",
    "SchwabAuth",
    "Settings",
    "Snapshot",
    "TokenDecryptionFailed",
    "Trade",
    "TradeStatus",
    "Transaction",
    "ValidationError",
    "health_check",
    "io_ratio",
    "price_per_share_cents",
]
