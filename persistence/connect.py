"""Connecting: which server, with which session settings, and one connection with retries.

Kept apart from ``database`` so that the migration runner and the health probe start fast.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from persistence._translate import translate
from persistence.config import Settings, redact
from persistence.errors import AuthenticationFailed, ConfigurationError, DatabaseUnavailable

__all__ = [
    "Attempts",
    "build_conninfo",
    "describe_target",
    "open_async_connection",
    "open_connection",
    "server_url",
    "whole_seconds",
]

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]


def server_url(settings: Settings) -> str:
    """The URL to use: ``settings.url``, else the embedded server when that is allowed."""
    if settings.url is not None:
        return settings.url
    if settings.embedded == "never":
        raise ConfigurationError(
            "DATABASE_URL is not set and PERSISTENCE_EMBEDDED=never forbids the embedded server: "
            "set DATABASE_URL=postgresql://USER@HOST:5432/DBNAME"
        )
    from persistence.embedded import embedded_url  # optional extra: imported only when needed

    return embedded_url(settings.embedded_dir)


def whole_seconds(seconds: float) -> int:
    """libpq's ``connect_timeout`` for ``seconds``: it takes whole seconds, and below 2 means 2."""
    return max(2, math.ceil(seconds))


def build_conninfo(
    settings: Settings,
    url: str,
    *,
    statement_timeout: float | None = None,
    idle_in_transaction_timeout: float | None = None,
) -> str:
    """libpq connection string: the URL plus per-connection session settings.

    Time zone, statement timeout and idle-in-transaction timeout travel in the startup packet
    (``options``), so a new connection is configured without an extra round trip.
    ``statement_timeout`` and ``idle_in_transaction_timeout`` override the settings of those
    names (migrations and the import have their own). The URL's own options are kept and win,
    except the time zone: the models promise UTC, so UTC comes last.
    """
    timeout = settings.statement_timeout if statement_timeout is None else statement_timeout
    idle = (
        settings.idle_in_transaction_timeout
        if idle_in_transaction_timeout is None
        else idle_in_transaction_timeout
    )
    params = conninfo_to_dict(url)
    # 0 is sent too: it overrides a role's or database's default, as "disables" promises.
    # READ COMMITTED over a role's or database's default: the functions' and the event store's
    # checks take a snapshot per statement to see concurrent commits (append_events refuses
    # any other level)
    options = (
        f"-c statement_timeout={round(timeout * 1000)} "
        f"-c idle_in_transaction_session_timeout={round(idle * 1000)} "
        r"-c default_transaction_isolation=read\ committed"
    )
    if params.get("options"):
        options = f"{options} {params['options']}"
    extra: dict[str, Any] = {
        "application_name": settings.application_name,
        "connect_timeout": whole_seconds(settings.connect_timeout),
        "options": f"{options} -c TimeZone=UTC",
    }
    # a dead peer is noticed by the kernel, not after TCP's 15-minute retransmission limit;
    # values given in the URL win
    tcp = {
        "keepalives": 1,
        "keepalives_idle": settings.keepalives_idle,
        "keepalives_interval": settings.keepalives_interval,
        "keepalives_count": settings.keepalives_count,
        "tcp_user_timeout": round(settings.tcp_user_timeout * 1000),
    }
    extra.update((k, v) for k, v in tcp.items() if v and k not in params)
    if settings.sslmode is not None:
        extra["sslmode"] = settings.sslmode
    if settings.sslrootcert is not None:
        extra["sslrootcert"] = str(settings.sslrootcert)
    return make_conninfo(url, **extra)


def describe_target(conninfo: str) -> str:
    """``user@host:port/dbname`` (``host1:port1,host2:port2`` for several) for messages:
    never the password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "the configured server"
    hosts = str(params.get("host") or "localhost").split(",")
    ports = str(params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports *= len(hosts)
    servers = ",".join(
        f"{host or 'localhost'}:{port or '5432'}" for host, port in zip(hosts, ports, strict=False)
    )
    user = str(params.get("user") or "")
    return f"{user + '@' if user else ''}{servers}/{params.get('dbname') or user or ''}"


def _is_auth_failure(message: str) -> bool:
    return any(
        marker in message
        for marker in (
            "password authentication failed",
            "no password supplied",
            "authentication failed",
        )
    )


def _sentence(reason: str) -> str:
    """``reason`` ended as a sentence: libpq's own may end in "?" or "." already."""
    return reason if reason.endswith((".", "?", "!")) else f"{reason}."


class Attempts:
    """The retry policy of opening one connection: backoff for up to ``wait`` seconds. No I/O."""

    def __init__(self, conninfo: str, wait: float) -> None:
        self.conninfo = conninfo
        self.deadline = time.monotonic() + wait
        self.attempt = 0
        self.delay = 0.1

    def failed(self, exc: psycopg.OperationalError) -> float:
        """Seconds to wait before the next attempt; raises our error when there is none."""
        self.attempt += 1
        password = conninfo_to_dict(self.conninfo).get("password")
        reason = redact(" ".join(str(exc).split()), str(password) if password else None)
        target = describe_target(self.conninfo)
        missing = re.search(r'(database|role) "([^"]*)" does not exist', reason)
        if missing:  # the server answered: waiting will not make it appear
            kind, name = missing.groups()
            fix = (
                "create it (createdb, or CREATE DATABASE) or correct the database name"
                if kind == "database"
                else "create the role (see docs/production.md) or correct the user name"
            )
            raise DatabaseUnavailable(
                f"the server at {target} is up, but the {kind} {name!r} does not exist: {fix} "
                "in DATABASE_URL"
            ) from None
        if _is_auth_failure(reason):
            raise AuthenticationFailed(
                f"the server at {target} refused the credentials: {reason}. Check the user "
                "and password in DATABASE_URL"
            ) from None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise DatabaseUnavailable(
                f"cannot connect to {target}: {_sentence(reason)} Check that the server is "
                "running and that DATABASE_URL points at it"
            ) from None
        pause = min(self.delay, remaining)
        logger.warning(
            "database %s not reachable (attempt %d): %s; retrying in %.1f s",
            target,
            self.attempt,
            reason,
            pause,
        )
        self.delay = min(self.delay * 2, 2.0)
        return pause


def open_connection(conninfo: str, *, wait: float = 0.0, **kwargs: Any) -> Connection:
    """One connection, retried with backoff for up to ``wait`` seconds while the server starts."""
    attempts = Attempts(conninfo, wait)
    while True:
        try:
            return psycopg.connect(conninfo, **kwargs)
        except psycopg.OperationalError as exc:
            time.sleep(attempts.failed(exc))
        except psycopg.Error as exc:
            raise translate(exc) from None


async def open_async_connection(
    conninfo: str, *, wait: float = 0.0, **kwargs: Any
) -> psycopg.AsyncConnection[Any]:
    """``open_connection`` for asyncio."""
    attempts = Attempts(conninfo, wait)
    while True:
        try:
            return await psycopg.AsyncConnection.connect(conninfo, **kwargs)
        except psycopg.OperationalError as exc:
            await asyncio.sleep(attempts.failed(exc))
        except psycopg.Error as exc:
            raise translate(exc) from None
