"""Settings: environment variables and keyword overrides, validated before any connection is tried.

Every variable is listed in ``.env.example`` and docs/configuration.md. The password of a URL is
kept, but never shown: ``repr``, logs and error messages use :func:`redact`.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import attrs
import cattrs
from cattrs.literals import is_literal
from psycopg.conninfo import conninfo_to_dict

from persistence.errors import ConfigurationError

__all__ = ["ENV_VARS", "Settings", "python_m", "redact"]

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
SSL_MODES: tuple[str, ...] = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
EmbeddedMode = Literal["auto", "never"]
SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")

# setting name -> environment variable
ENV_VARS: dict[str, str] = {
    "url": "DATABASE_URL",
    "min_size": "PERSISTENCE_POOL_MIN_SIZE",
    "max_size": "PERSISTENCE_POOL_MAX_SIZE",
    "connect_timeout": "PERSISTENCE_CONNECT_TIMEOUT",
    "acquire_timeout": "PERSISTENCE_POOL_TIMEOUT",
    "statement_timeout": "PERSISTENCE_STATEMENT_TIMEOUT",
    "operation_timeout": "PERSISTENCE_OPERATION_TIMEOUT",
    "idle_in_transaction_timeout": "PERSISTENCE_IDLE_IN_TRANSACTION_TIMEOUT",
    "tcp_user_timeout": "PERSISTENCE_TCP_USER_TIMEOUT",
    "keepalives_idle": "PERSISTENCE_KEEPALIVES_IDLE",
    "keepalives_interval": "PERSISTENCE_KEEPALIVES_INTERVAL",
    "keepalives_count": "PERSISTENCE_KEEPALIVES_COUNT",
    "application_name": "PERSISTENCE_APPLICATION_NAME",
    "sslmode": "PERSISTENCE_SSLMODE",
    "sslrootcert": "PERSISTENCE_SSLROOTCERT",
    "prepare_threshold": "PERSISTENCE_PREPARE_THRESHOLD",
    "embedded": "PERSISTENCE_EMBEDDED",
    "embedded_dir": "PERSISTENCE_EMBEDDED_DIR",
    "migrations_dir": "PERSISTENCE_MIGRATIONS_DIR",
    "migration_lock_timeout": "PERSISTENCE_MIGRATION_LOCK_TIMEOUT",
    "ddl_lock_timeout": "PERSISTENCE_DDL_LOCK_TIMEOUT",
    "migration_statement_timeout": "PERSISTENCE_MIGRATION_STATEMENT_TIMEOUT",
    "import_statement_timeout": "PERSISTENCE_IMPORT_STATEMENT_TIMEOUT",
    "token_keys": "PERSISTENCE_TOKEN_KEYS",
    "token_keys_file": "PERSISTENCE_TOKEN_KEYS_FILE",
    "event_max_attempts": "PERSISTENCE_EVENT_MAX_ATTEMPTS",
    "event_retry_delay": "PERSISTENCE_EVENT_RETRY_DELAY",
}

# The event queue's retry policy (persistence.operations.events.mark_failed): a failed event
# waits event_retry_delay seconds, doubling with each failure up to the cap, and becomes a dead
# letter at event_max_attempts. The cap keeps a retried event within minutes of its turn.
DEFAULT_EVENT_MAX_ATTEMPTS = 5
DEFAULT_EVENT_RETRY_DELAY = 1.0
EVENT_RETRY_DELAY_CAP = 300.0

_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>[^@/?#\s]*)(?=@)", re.I
)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s&]*)", re.I)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with URL and key=value passwords, and any of ``secrets``, replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***", text)
    text = _KV_PASSWORD.sub(r"\g<head>***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def python_m(module: str, *args: str) -> str:
    """``python -m module args`` for a message, with the interpreter that is running: a bare
    ``python`` outside the virtual environment would not find the package."""
    return shlex.join([sys.executable or "python3", "-m", module, *args])


def _positive_number(instance: Settings, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigurationError(
            f"{attribute.name} must be a positive number of seconds, got {value!r} "
            f"(environment variable {ENV_VARS[attribute.name]})"
        )


def _not_negative(instance: Settings, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ConfigurationError(
            f"{attribute.name} must be >= 0 (0 disables it), got {value!r} "
            f"(environment variable {ENV_VARS[attribute.name]})"
        )


def _check_pool(instance: Settings, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0 or (attribute.name == "max_size" and value < 1):
        raise ConfigurationError(
            f"{attribute.name} must be at least {int(attribute.name == 'max_size')}, got {value}"
        )
    if attribute.name == "max_size" and value < instance.min_size:
        raise ConfigurationError(
            f"max_size ({value}) must be at least min_size ({instance.min_size}); "
            f"set {ENV_VARS['max_size']} or {ENV_VARS['min_size']}"
        )


def _check_attempts(instance: Settings, attribute: attrs.Attribute[Any], value: int) -> None:
    # attempts are counted in an integer column
    if type(value) is not int or not 1 <= value <= 2**31 - 1:
        raise ConfigurationError(
            f"{attribute.name} must be an integer >= 1 (failed attempts before an event is a "
            f"dead letter), got {value!r} (environment variable {ENV_VARS[attribute.name]})"
        )


def _check_retry_delay(instance: Settings, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value <= EVENT_RETRY_DELAY_CAP:
        raise ConfigurationError(
            f"{attribute.name} must be from 0 to {EVENT_RETRY_DELAY_CAP:g} seconds (0: retry at "
            f"once), got {value!r} (environment variable {ENV_VARS[attribute.name]})"
        )


def _check_url(instance: Settings, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None:
        validate_url(value)


def _check_choice(choices: tuple[str, ...]) -> Any:
    def check(instance: Settings, attribute: attrs.Attribute[Any], value: str | None) -> None:
        if value is not None and value not in choices:
            raise ConfigurationError(
                f"{attribute.name} must be one of {', '.join(choices)}; got {value!r} "
                f"(environment variable {ENV_VARS[attribute.name]})"
            )

    return check


def _root_certificate_for(settings: Settings) -> bool:
    """False when the connection would verify the server (``verify-full``, from the setting, the
    URL or libpq's PGSSLMODE) with no root certificate: not the setting's, not the URL's, not
    libpq's PGSSLROOTCERT, not its default ``~/.postgresql/root.crt``. libpq would fail only on
    the first connection, with a less clear message."""
    params = conninfo_to_dict(settings.url) if settings.url else {}
    # the setting is appended to the URL's parameters, so it wins; libpq's variables come last
    mode = settings.sslmode or params.get("sslmode") or os.environ.get("PGSSLMODE")
    if mode != "verify-full":
        return True
    if settings.sslrootcert is not None or params.get("sslrootcert"):
        return True
    if os.environ.get("PGSSLROOTCERT"):
        return True
    return (Path.home() / ".postgresql" / "root.crt").is_file()


def _redacted_url(value: str | None) -> str:
    return "None" if value is None else repr(redact(value))


@attrs.frozen(kw_only=True)
class Settings:
    """Validated connection and pool settings; see docs/configuration.md for each one."""

    url: str | None = attrs.field(default=None, validator=_check_url, repr=_redacted_url)
    min_size: int = attrs.field(default=1, validator=_check_pool)
    max_size: int = attrs.field(default=10, validator=_check_pool)
    connect_timeout: float = attrs.field(default=5.0, validator=_positive_number)
    acquire_timeout: float = attrs.field(default=10.0, validator=_positive_number)
    # 0 disables the server-side statement timeout
    statement_timeout: float = attrs.field(default=30.0, validator=_not_negative)
    # Client-side bound on each wait for the server, for when the server cannot hear us (a
    # partition, a dead host) and so cannot enforce statement_timeout; 0 disables it.
    operation_timeout: float = attrs.field(default=35.0, validator=_not_negative)
    # Server-side bound on how long a session may sit idle inside a transaction (a stalled
    # worker holding row locks); the server then ends the session and rolls back. 0 disables it.
    idle_in_transaction_timeout: float = attrs.field(default=60.0, validator=_not_negative)
    # Kernel-level detection of a dead peer on every connection (libpq keepalives and
    # tcp_user_timeout); 0 leaves the operating system's default.
    tcp_user_timeout: float = attrs.field(default=30.0, validator=_not_negative)
    keepalives_idle: int = attrs.field(default=30, validator=_not_negative)
    keepalives_interval: int = attrs.field(default=10, validator=_not_negative)
    keepalives_count: int = attrs.field(default=3, validator=_not_negative)
    application_name: str = "persistence"
    sslmode: SslMode | None = attrs.field(default=None, validator=_check_choice(SSL_MODES))
    sslrootcert: Path | None = None
    # None disables server-side prepared statements (PgBouncer before 1.21 in transaction mode)
    prepare_threshold: int | None = 5
    embedded: EmbeddedMode = attrs.field(default="auto", validator=_check_choice(("auto", "never")))
    embedded_dir: Path = Path(".postgres-data/embedded")
    migrations_dir: Path | None = None
    migration_lock_timeout: float = attrs.field(default=60.0, validator=_positive_number)
    ddl_lock_timeout: float = attrs.field(default=5.0, validator=_positive_number)
    # Migrations and the SQLite import are long by nature: their statements are unbounded
    # unless these are set (ddl_lock_timeout still bounds a migration's wait for a table lock).
    migration_statement_timeout: float = attrs.field(default=0.0, validator=_not_negative)
    import_statement_timeout: float = attrs.field(default=0.0, validator=_not_negative)
    # The keyring sealing the Schwab tokens, "id:base64key[,...]" (persistence.tokens); never
    # shown. Checked when a database is opened.
    token_keys: str | None = attrs.field(
        default=None, repr=lambda value: "None" if value is None else "'***'"
    )
    token_keys_file: Path | None = None
    # The event queue: failed attempts before an event is a dead letter, and the first backoff
    # in seconds (doubling per failure, at most EVENT_RETRY_DELAY_CAP; 0 retries at once).
    event_max_attempts: int = attrs.field(
        default=DEFAULT_EVENT_MAX_ATTEMPTS, validator=_check_attempts
    )
    event_retry_delay: float = attrs.field(
        default=DEFAULT_EVENT_RETRY_DELAY, validator=_check_retry_delay
    )

    def __attrs_post_init__(self) -> None:
        if self.url is not None and not _root_certificate_for(self):
            raise ConfigurationError(
                "sslmode verify-full needs the server's root certificate: set "
                f"{ENV_VARS['sslrootcert']} to its path (or sslrootcert= in DATABASE_URL)"
            )
        if self.sslrootcert is not None and not self.sslrootcert.is_file():
            raise ConfigurationError(
                f"sslrootcert {str(self.sslrootcert)!r} is not a readable file"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); keyword overrides win."""
        env = os.environ if environ is None else environ
        unknown = set(overrides) - set(ENV_VARS)
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s): {', '.join(sorted(unknown))}; known: {', '.join(ENV_VARS)}"
            )
        values: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            if name in overrides:
                # a None keyword is the default, unless None is a value of the field's own
                if overrides[name] is not None or _nullable(name):
                    values[name] = _setting(name, overrides[name], source="keyword")
            elif env.get(var, "") != "":
                values[name] = _setting(name, env[var], source=var)
        return cls(**values)


# Coercion: a string from the environment, or a keyword, becomes the type its field declares.
# This converter is config's own, not persistence.converter's: that one maps models to rows and
# back, passing ints and strs through untouched; settings want the opposite (text parsed, bools
# refused) and sit below it (connect.py and the CLIs read settings, never models or rows).
_coercion = cattrs.Converter()
attrs.resolve_types(Settings)  # the annotations are strings until resolved, once


_N = TypeVar("_N", int, float)


class _Unreadable(Exception):
    """A value its setting cannot be made of; ``expected`` says what it should have been."""

    def __init__(self, expected: str) -> None:
        self.expected = expected


def _number(kind: type[_N], expected: str) -> Callable[[Any, Any], _N]:
    def structure(value: Any, _type: Any) -> _N:
        if isinstance(value, bool):  # True is an int to Python, never a size or a timeout
            raise _Unreadable(expected)
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise _Unreadable(expected) from None

    return structure


def _passthrough(value: Any, _type: Any) -> Any:
    return value


def _optional_int(value: Any, _type: Any) -> int | None:
    # a nullable integer (prepare_threshold) is switched off by name
    if value is None or (isinstance(value, str) and value.lower() in ("", "none", "off")):
        return None
    return _int(value, int)


_int = _number(int, "an integer")
_coercion.register_structure_hook(int, _int)
_coercion.register_structure_hook(float, _number(float, "a number"))
_coercion.register_structure_hook(int | None, _optional_int)
_coercion.register_structure_hook(Path, lambda value, _type: Path(value))
# text as given; the choices (Literal) are checked by the field's validator, whose message
# names the environment variable
_coercion.register_structure_hook(str, _passthrough)
_coercion.register_structure_hook_func(is_literal, _passthrough)


def _declared(name: str) -> Any:
    return attrs.fields_dict(Settings)[name].type


def _nullable(name: str) -> bool:
    return type(None) in get_args(_declared(name))


def _setting(name: str, value: Any, *, source: str) -> Any:
    try:
        return _coercion.structure(value, _declared(name))
    except _Unreadable as unreadable:
        shown = redact(str(value))
        raise ConfigurationError(
            f"{name} must be {unreadable.expected}, got {shown!r} (from {source})"
        ) from None


def validate_url(url: str) -> dict[str, str]:
    """Check a ``postgresql://`` URL or libpq ``key=value`` string; return its parameters."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            "DATABASE_URL is empty: set it to postgresql://user@host:5432/dbname"
        )
    stripped = url.strip()
    # key=value strings have "=" before any ":", so only URLs (and "sqlite:file.db") match here
    scheme_match = re.match(r"^([a-z][a-z0-9+.-]*):", stripped, re.I)
    if scheme_match:
        scheme = scheme_match.group(1).lower()
        if scheme.startswith("sqlite"):
            raise ConfigurationError(
                "DATABASE_URL is a SQLite URL; this library stores data in PostgreSQL. Point "
                "DATABASE_URL at a PostgreSQL server, and move the bot's SQLite data with "
                f"`{python_m('persistence.import_sqlite')} PATH` (docs/migrating-from-sqlite.md)"
            )
        if scheme not in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"DATABASE_URL has the unsupported scheme {scheme!r}: use postgresql:// "
                "(or postgres://), e.g. postgresql://user@localhost:5432/dbname"
            )
    try:
        params = conninfo_to_dict(stripped)
    except Exception as exc:  # psycopg.ProgrammingError: libpq could not parse it
        raise ConfigurationError(
            f"DATABASE_URL is malformed: {redact(str(exc).strip(), _password_guess(stripped))}; "
            "expected postgresql://user:password@host:port/dbname or key=value pairs"
        ) from None
    port = params.get("port")
    if port is not None:
        for part in str(port).split(","):
            if not part.isdigit() or not 0 < int(part) < 65536:
                raise ConfigurationError(
                    f"DATABASE_URL has an invalid port {part!r}: "
                    "it must be a number from 1 to 65535"
                )
    # several servers (a primary and its standbys): libpq tries them in order
    hosts = str(params.get("host") or "").split(",")
    ports = str(port or "").split(",")
    if len(ports) > 1 and len(ports) != len(hosts):
        raise ConfigurationError(
            f"DATABASE_URL names {len(hosts)} host(s) and {len(ports)} ports: give one port "
            "for all, or one per host (postgresql://user@h1:5432,h2:5433/dbname)"
        )
    attrs_value = params.get("target_session_attrs")
    if attrs_value is not None and attrs_value not in SESSION_ATTRS:
        raise ConfigurationError(
            f"DATABASE_URL has target_session_attrs={attrs_value!r}: use one of "
            f"{', '.join(SESSION_ATTRS)} (read-write: the primary, wherever it is)"
        )
    sslmode = params.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        raise ConfigurationError(
            f"DATABASE_URL has an unknown sslmode {sslmode!r}; use one of {', '.join(SSL_MODES)}"
        )
    return {k: str(v) for k, v in params.items()}


def _password_guess(url: str) -> str | None:
    match = _URL_PASSWORD.search(url) or _KV_PASSWORD.search(url)
    return match.group("pw") if match and match.group("pw") else None
