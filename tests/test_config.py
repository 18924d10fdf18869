"""Settings and URL validation: no server needed."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from persistence import ConfigurationError, Settings, config
from persistence.config import ENV_VARS, python_m, redact, validate_url

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user@localhost:5432/db",
        "postgres://user:pw@db.example.com/db?sslmode=require",
        "postgresql:///db?host=/var/run/postgresql",
        "host=localhost port=5432 dbname=db user=bot",
    ],
)
def test_accepts_postgres_urls_and_keyword_strings(url: str) -> None:
    assert validate_url(url)


def test_sqlite_url_points_to_the_import() -> None:
    with pytest.raises(ConfigurationError, match="import_sqlite"):
        validate_url("sqlite:///bot.db")


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://root@localhost/db", "unsupported scheme 'mysql'"),
        ("http://example.com", "unsupported scheme 'http'"),
        (f"postgresql://u:{SECRET}@[::1/db", "malformed"),
        (f"postgresql://u:{SECRET}@host:notaport/db", "invalid port"),
        (f"postgresql://u:{SECRET}@host:70000/db", "invalid port"),
        ("host=h dbname='unterminated", "malformed"),
        ("postgresql://h/db?sslmode=sometimes", "unknown sslmode"),
        ("", "empty"),
    ],
)
def test_bad_urls_are_named_without_the_password(url: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint) as caught:
        Settings(url=url)
    assert SECRET not in str(caught.value)


def test_repr_and_redact_hide_the_password() -> None:
    settings = Settings(url=f"postgresql://bot:{SECRET}@db:5432/trades")
    assert SECRET not in repr(settings)
    assert "bot:***@db" in repr(settings)
    assert SECRET not in redact(f"host=db password={SECRET} dbname=x")
    assert SECRET not in redact(f"host=db password='{SECRET} x' dbname=x")


def test_settings_come_from_the_environment_and_keywords_win() -> None:
    env = {
        "DATABASE_URL": "postgresql://a@b/c",
        "PERSISTENCE_POOL_MIN_SIZE": "2",
        "PERSISTENCE_POOL_MAX_SIZE": "7",
        "PERSISTENCE_CONNECT_TIMEOUT": "3.5",
        "PERSISTENCE_STATEMENT_TIMEOUT": "0",
        "PERSISTENCE_APPLICATION_NAME": "bot",
        "PERSISTENCE_SSLMODE": "require",
        "PERSISTENCE_PREPARE_THRESHOLD": "none",
        "PERSISTENCE_EMBEDDED": "never",
    }
    settings = Settings.from_env(env, max_size=9)
    assert (settings.min_size, settings.max_size, settings.connect_timeout) == (2, 9, 3.5)
    assert settings.statement_timeout == 0
    assert settings.application_name == "bot"
    assert settings.sslmode == "require"
    assert settings.prepare_threshold is None
    assert settings.embedded == "never"
    assert Settings.from_env({}).url is None


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"PERSISTENCE_POOL_MAX_SIZE": "many"}, "max_size must be an integer"),
        ({"PERSISTENCE_POOL_MIN_SIZE": "5", "PERSISTENCE_POOL_MAX_SIZE": "2"}, "at least min_size"),
        ({"PERSISTENCE_CONNECT_TIMEOUT": "0"}, "positive"),
        ({"PERSISTENCE_SSLMODE": "maybe"}, "sslmode must be one of"),
        ({"PERSISTENCE_EMBEDDED": "sometimes"}, "embedded must be one of"),
        ({"PERSISTENCE_SSLROOTCERT": "/nonexistent/root.crt"}, "not a readable file"),
        (
            {"DATABASE_URL": "postgresql://h/db", "PERSISTENCE_SSLMODE": "verify-full"},
            "root certificate",
        ),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        Settings.from_env(env)


def test_unknown_keyword_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown setting"):
        Settings.from_env({}, pool_size=3)


def test_env_example_lists_every_variable() -> None:
    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    missing = [var for var in ENV_VARS.values() if var not in example]
    assert missing == []


def test_env_example_as_sourced_gives_valid_development_settings() -> None:
    """What `set -a; . ./.env.example` exports: the active lines, which must all be valid."""
    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    active = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    assert "DATABASE_URL" not in active and active["PERSISTENCE_EMBEDDED"] == "auto"
    settings = Settings.from_env(environ=active)
    assert settings.url is None and settings.sslmode is None


def test_libpq_echoing_a_password_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq quotes a badly percent-encoded password in its error: redaction must remove it."""
    url = f"postgresql://bot:{SECRET}%ZZ@db:5432/trades"
    with pytest.raises(ConfigurationError, match="malformed") as caught:
        Settings(url=url)
    assert SECRET not in str(caught.value)
    # the check can fail: without redaction, the same path shows the password
    monkeypatch.setattr(config, "redact", lambda text, *secrets: text)
    with pytest.raises(ConfigurationError) as unredacted:
        Settings(url=url)
    assert SECRET in str(unredacted.value)


def test_conninfo_bounds_the_network_and_forces_utc() -> None:
    from psycopg.conninfo import conninfo_to_dict

    from persistence.connect import build_conninfo

    url = "postgresql://bot@db:5432/x?keepalives_idle=7&options=-c%20TimeZone%3DAsia/Tokyo"
    params = conninfo_to_dict(build_conninfo(Settings(url=url, statement_timeout=0), url))
    assert params["keepalives"] == "1" and params["keepalives_idle"] == "7"  # the URL's wins
    assert (params["keepalives_interval"], params["keepalives_count"]) == ("10", "3")
    assert params["tcp_user_timeout"] == "30000"
    # 0 is sent, so a role's default cannot re-impose a timeout; UTC comes after the URL's zone
    assert params["options"] == (
        "-c statement_timeout=0 -c idle_in_transaction_session_timeout=60000 "
        r"-c default_transaction_isolation=read\ committed "
        "-c TimeZone=Asia/Tokyo -c TimeZone=UTC"
    )
    migration = build_conninfo(Settings(url=url), url, statement_timeout=0)
    assert "statement_timeout=0" in conninfo_to_dict(migration)["options"]


@pytest.mark.parametrize(
    "env",
    [
        {"DATABASE_URL": "postgresql://h/db", "PERSISTENCE_SSLMODE": "verify-full"},
        {"DATABASE_URL": "postgresql://bot@db.example.com:5432/persistence?sslmode=verify-full"},
        {"DATABASE_URL": "host=db.example.com dbname=persistence sslmode=verify-full"},
    ],
    ids=["the setting", "the URL", "a key=value string"],
)
def test_verify_full_without_a_root_certificate_is_refused_in_either_form(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused when the settings are read, before any connection: libpq would fail only on the
    first one. A root certificate from the setting, the URL, libpq's PGSSLROOTCERT or its
    ~/.postgresql/root.crt is enough; a setting's sslmode overrides the URL's."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    monkeypatch.delenv("PGSSLMODE", raising=False)
    with pytest.raises(ConfigurationError, match="needs the server's root certificate"):
        Settings.from_env(env)
    root = tmp_path / "root.crt"
    root.write_text("a certificate\n")
    assert Settings.from_env({**env, "PERSISTENCE_SSLROOTCERT": str(root)}).sslrootcert == root
    url = env["DATABASE_URL"]
    glue = " " if "://" not in url else ("&" if "?" in url else "?")
    assert Settings.from_env({**env, "DATABASE_URL": f"{url}{glue}sslrootcert={root}"})
    assert Settings.from_env({**env, "PERSISTENCE_SSLMODE": "require"}).sslmode == "require"
    monkeypatch.setenv("PGSSLROOTCERT", str(root))
    assert Settings.from_env(env)
    monkeypatch.delenv("PGSSLROOTCERT")
    (tmp_path / ".postgresql").mkdir()
    (tmp_path / ".postgresql" / "root.crt").write_text("a certificate\n")
    assert Settings.from_env(env)


def test_verify_full_from_libpqs_own_variable_is_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    with pytest.raises(ConfigurationError, match="root certificate"):
        Settings.from_env({"DATABASE_URL": "postgresql://h/db"})
    assert Settings.from_env({"DATABASE_URL": "postgresql://h/db?sslmode=require"})


def test_a_suggested_command_names_the_running_interpreter() -> None:
    """A bare ``python`` outside the virtual environment has no ``persistence``: the commands
    that messages suggest name the interpreter that is running."""
    from persistence.tokens import NO_KEY

    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({"DATABASE_URL": "sqlite:///bot.db"})
    assert f"`{sys.executable} -m persistence.import_sqlite PATH`" in str(refused.value)
    assert f"`{sys.executable} -m persistence.tokens new-key`" in NO_KEY
    assert (
        python_m("persistence.migrate") == f"{shlex.quote(sys.executable)} -m persistence.migrate"
    )


def production_part_of_env_example() -> dict[str, str]:
    """The settings that .env.example's production part sets, uncommented (the last of a
    repeated name wins, as when the lines are sourced)."""
    text = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    production = text.split("# --- production", 1)[1]
    return dict(
        line.removeprefix("# ").split("=", 1)
        for line in production.splitlines()
        if re.match(r"# [A-Z_]+=\S", line)
    )


@pytest.mark.db
def test_the_suite_reads_no_setting_from_the_callers_environment(tmp_path: Path) -> None:
    """With .env.example's production part exported (a real-looking DATABASE_URL, embedded
    never, verify-full, a placeholder token keyring and key file), the token and config tests
    still pass: tests/conftest.py clears every such variable for the run."""
    ambient = production_part_of_env_example()
    assert {"DATABASE_URL", "PERSISTENCE_TOKEN_KEYS", "PERSISTENCE_EMBEDDED"} <= set(ambient)
    env = {**os.environ, **ambient, "PGSSLMODE": "verify-full"}
    env = {k: v for k, v in env.items() if not k.startswith("PYTEST_")}  # not a worker of ours
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:randomly",
            f"--basetemp={tmp_path / 'nested'}",
            "tests/test_tokens.py",
            "tests/test_config.py",
            "-k",
            "not the_suite_reads_no_setting",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
