"""The Schwab tokens sealed at rest: keys, sealing, rotation, errors, secrecy; both APIs."""

from __future__ import annotations

import base64
import logging
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from persistence import (
    ConfigurationError,
    Database,
    Settings,
    TokenDecryptionFailed,
    health_check,
)
from persistence.tokens import development_keyring, keyring_for, new_key, parse_keyring
from tests.factories import make_auth
from tests.support import TEST_TOKEN_KEYS, environment_without, postgres_binary, store_plain_auth

ACCESS = "ACCESS-TOKEN-abcdefghijklmnopqrstuvwxyz-0123456789"
REFRESH = "REFRESH-TOKEN-zyxwvutsrqponmlkjihgfedcba-9876543210"
OLD_ONLY = "test-old:" + "B" * 43 + "="  # the second key of the tests' ring, alone
OTHER = new_key("other")


SECRET_AUTH = make_auth(access_token=ACCESS, refresh_token=REFRESH)


def raw(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_saved_tokens_are_nowhere_in_the_database(db: Any, database_url: str) -> None:
    db.schwab_auth.save(SECRET_AUTH)
    assert db.schwab_auth.load() == SECRET_AUTH
    everything = repr(raw(database_url, "SELECT * FROM schwab_auth"))
    assert ACCESS not in everything and REFRESH not in everything
    assert "test-current" in everything  # the key id is stored, the key is not
    dump = subprocess.run(
        [postgres_binary(database_url, "pg_dump"), "--dbname", database_url],
        capture_output=True,
        check=True,
    ).stdout
    assert b"schwab_auth" in dump  # the control: the table is in the dump
    for secret in (ACCESS, REFRESH, "A" * 43):
        assert secret.encode() not in dump


def test_tokens_sealed_under_an_older_key_still_load(database_url: str, db: Any) -> None:
    with Database.connect(database_url, token_keys=OLD_ONLY) as old:
        old.schwab_auth.save(SECRET_AUTH)
    assert raw(database_url, "SELECT token_key_id FROM schwab_auth") == [("test-old",)]
    assert db.schwab_auth.load() == SECRET_AUTH  # the ring: test-current, test-old


def test_rotate_leaves_nothing_under_the_old_key(database_url: str, db: Any) -> None:
    with Database.connect(database_url, token_keys=OLD_ONLY) as old:
        old.schwab_auth.save(SECRET_AUTH)
    assert db.schwab_auth.status() == {"test-old": 1}
    assert db.schwab_auth.rotate() == {"test-old": 1}
    assert db.schwab_auth.status() == {"test-current": 1}
    current_only = TEST_TOKEN_KEYS.split(",")[0]
    with Database.connect(database_url, token_keys=current_only) as new:
        assert new.schwab_auth.load() == SECRET_AUTH


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("wrong key", "did not decrypt"),
        ("flipped byte", "did not decrypt"),
        ("swapped columns", "did not decrypt"),
        ("unknown key id", "not in the keyring"),
    ],
)
def test_a_wrong_key_or_changed_bytes_fail_loudly(
    db: Any, database_url: str, change: str, message: str
) -> None:
    db.schwab_auth.save(SECRET_AUTH)
    keys = TEST_TOKEN_KEYS
    with psycopg.connect(database_url) as conn:
        if change == "wrong key":  # the same id, another key
            keys = "test-current:" + base64.b64encode(b"x" * 32).decode()
        elif change == "flipped byte":
            conn.execute(
                "UPDATE schwab_auth SET access_token_sealed = "
                "set_byte(access_token_sealed, 20, get_byte(access_token_sealed, 20) # 1)"
            )
        elif change == "swapped columns":
            conn.execute(
                "UPDATE schwab_auth SET access_token_sealed = refresh_token_sealed, "
                "refresh_token_sealed = access_token_sealed"
            )
        else:
            conn.execute("UPDATE schwab_auth SET token_key_id = 'retired'")
    with (
        Database.connect(database_url, token_keys=keys) as other,
        pytest.raises(TokenDecryptionFailed, match=message) as caught,
    ):
        other.schwab_auth.load()
    assert ACCESS not in str(caught.value) and "x" * 8 not in str(caught.value)
    assert "'test-current'" in str(caught.value) or "'retired'" in str(caught.value)


def test_concurrent_save_and_rotate_lose_no_update(
    _session_db: Database, database_url: str
) -> None:
    db = _session_db
    db.schwab_auth.save(SECRET_AUTH)
    stop = threading.Event()
    rotations = 0

    def rotate() -> None:
        nonlocal rotations
        while not stop.is_set():
            db.schwab_auth.rotate()
            rotations += 1

    rotator = threading.Thread(target=rotate)
    rotator.start()
    try:
        for n in range(60):
            latest = make_auth(access_token=f"access-{n}", refresh_token=f"refresh-{n}")
            db.schwab_auth.save(latest)
    finally:
        stop.set()
        rotator.join()
    assert rotations > 0
    assert db.schwab_auth.load() == latest  # the last save, not a rotation's stale copy


def test_a_plain_row_loads_with_a_warning_and_encrypt_seals_it(
    db: Any, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store_plain_auth(database_url, SECRET_AUTH)
    from persistence.operations import auth as auth_ops

    auth_ops._warned_plain.clear()
    with caplog.at_level(logging.WARNING, logger="persistence.tokens"):
        assert db.schwab_auth.load().access_token == ACCESS
    assert "plain text" in caplog.text and ACCESS not in caplog.text
    assert db.schwab_auth.status() == {"plain": 1}
    assert db.schwab_auth.encrypt() == {"plain": 1}
    assert db.schwab_auth.status() == {"test-current": 1}
    assert ACCESS not in repr(raw(database_url, "SELECT * FROM schwab_auth"))
    assert db.schwab_auth.load().refresh_token == REFRESH


def test_production_without_a_key_refuses_to_save(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PERSISTENCE_TOKEN_KEYS")
    with psycopg.connect(database_url) as conn:
        conn.execute("DELETE FROM schwab_auth")
    with Database.connect(database_url) as db:
        with pytest.raises(ConfigurationError, match="set PERSISTENCE_TOKEN_KEYS"):
            db.schwab_auth.save(SECRET_AUTH)
        assert db.schwab_auth.load() is None  # nothing was written


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (" , ,", "holds no key"),
        ("nocolon", "must be id:base64key"),
        ("bad id!:" + "A" * 44, "must be id:base64key"),
        ("k1:not-base64!!", "not valid base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "is 5 bytes; AES-256 needs 32"),
        (f"k1:{'C' * 43}=,k1:{'D' * 43}=", "appears twice"),
    ],
)
def test_bad_keys_are_refused_at_connect_without_showing_them(
    database_url: str, keys: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        Database.connect(database_url, token_keys=keys)
    assert "PERSISTENCE_TOKEN_KEYS" in str(caught.value)
    for secret in ("not-base64", "C" * 43, "A" * 44):
        assert secret not in str(caught.value)


def test_the_key_file_variant(
    database_url: str, tmp_path: Path, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PERSISTENCE_TOKEN_KEYS")  # it would win over the file
    path = tmp_path / "keys"
    path.write_text(TEST_TOKEN_KEYS + "\n")
    path.chmod(0o600)  # the bot's user only: wider modes are refused
    with Database.connect(database_url, token_keys_file=path) as from_file:
        from_file.schwab_auth.save(SECRET_AUTH)
    assert db.schwab_auth.load() == SECRET_AUTH
    with pytest.raises(ConfigurationError, match=r"PERSISTENCE_TOKEN_KEYS_FILE .* cannot be read"):
        Database.connect(database_url, token_keys_file=tmp_path / "missing")


def test_the_development_key_is_made_once_beside_the_embedded_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    embedded = tmp_path / ".postgres-data" / "embedded"
    path = tmp_path / ".postgres-data" / "embedded.token-keys"
    with caplog.at_level(logging.WARNING, logger="persistence.tokens"):
        first = development_keyring(embedded)
        # made when first needed: a bot that never stores tokens gets no key and no warning
        assert not path.exists() and caplog.text == ""
        assert repr(first) == "Keyring(current='dev', ids='not made yet')"
        assert first.ids == ("dev",)
        again = development_keyring(embedded)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert caplog.text.count("generated a development key") == 1
    assert path.read_text().split(":")[1].strip() not in caplog.text  # the key is not logged
    assert first.ids == again.ids == ("dev",)
    sealed = first.seal("token", b"ctx")
    assert again.unseal(*sealed, b"ctx") == "token"
    # only for the embedded server: never with DATABASE_URL, never when embedded is "never"
    dev = Settings(embedded_dir=embedded)
    assert keyring_for(dev) is not None
    assert keyring_for(Settings(url="postgresql://db/x", embedded_dir=embedded)) is None
    assert keyring_for(Settings(embedded="never", embedded_dir=embedded)) is None


def test_keys_and_tokens_appear_in_no_repr_log_or_report(
    db: Any, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ring = parse_keyring(TEST_TOKEN_KEYS)
    settings = Settings(url=database_url, token_keys=TEST_TOKEN_KEYS)
    with caplog.at_level(logging.DEBUG):
        db.schwab_auth.save(SECRET_AUTH)
        loaded = db.schwab_auth.load()
        db.schwab_auth.rotate()
        report = health_check(db) if isinstance(db, Database) else db.health_check()
    shown = " ".join(
        [repr(ring), repr(settings), repr(loaded), repr(report), caplog.text, repr(db)]
    )
    for secret in (ACCESS, REFRESH, "A" * 43, "B" * 43):
        assert secret not in shown
    assert "test-current" in repr(ring)  # the ids are shown: the control


def _tokens_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = environment_without("DATABASE_URL")
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "persistence.tokens", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_the_tokens_command(emptied_url: str) -> None:
    with Database.connect(emptied_url, token_keys=OLD_ONLY) as old:
        old.schwab_auth.save(SECRET_AUTH)
    status = _tokens_cli("status", "--database-url", emptied_url)
    assert status.returncode == 0, status.stderr
    assert "1 under 'test-old'" in status.stdout and "current key: 'test-current'" in status.stdout
    rotated = _tokens_cli("rotate", "--database-url", emptied_url)
    assert rotated.returncode == 0 and "re-sealed under 'test-current': 1 under 'test-old'" in (
        rotated.stdout
    )
    assert _tokens_cli("encrypt", "--database-url", emptied_url).stdout.startswith(
        "sealed under the current key: none"
    )
    wrong = _tokens_cli(
        "status", "--database-url", emptied_url, env={"PERSISTENCE_TOKEN_KEYS": "x:1"}
    )
    assert wrong.returncode == 2 and "not valid base64" in wrong.stderr
    failed = _tokens_cli(
        "rotate", "--database-url", emptied_url, env={"PERSISTENCE_TOKEN_KEYS": OTHER}
    )
    assert failed.returncode == 1 and "'test-current', which is not in the keyring" in failed.stderr
    key = _tokens_cli("new-key", "k1")
    assert key.returncode == 0 and parse_keyring(key.stdout).ids == ("k1",)
    for output in (status, rotated, wrong, failed):
        assert ACCESS not in output.stdout + output.stderr


SEALING = 3  # migrations/0003_seal_schwab_tokens


def test_migrating_down_refuses_sealed_tokens_until_decrypted(empty_database_url: str) -> None:
    from persistence import MigrationFailed, migrate

    settings = Settings.from_env(url=empty_database_url)
    migrate.apply(settings, target=SEALING)  # later migrations come and go after it
    with Database.connect(empty_database_url) as db:
        db.schwab_auth.save(SECRET_AUTH)
        with pytest.raises(MigrationFailed, match="sealed tokens"):
            migrate.rollback(settings, target=SEALING - 1)
        assert db.schwab_auth.decrypt() == {"test-current": 1}
        assert db.schwab_auth.load() == SECRET_AUTH
    migrate.rollback(settings, target=SEALING - 1)
    assert raw(empty_database_url, "SELECT access_token, refresh_token FROM schwab_auth") == [
        (ACCESS, REFRESH)
    ]
    migrate.apply(settings)  # and up again: the plain row is sealed by `encrypt`
    with Database.connect(empty_database_url) as db:
        assert db.schwab_auth.encrypt() == {"plain": 1}
        assert db.schwab_auth.load() == SECRET_AUTH


def test_the_sqlite_import_seals_the_tokens(tmp_path: Path, empty_database_url: str) -> None:
    from persistence.import_sqlite import import_sqlite
    from tests import bot_store

    auth = {
        "access_token": ACCESS,
        "access_token_fetched_at": "2026-03-01 11:00:00",
        "refresh_token": REFRESH,
        "refresh_token_fetched_at": "2026-03-01 11:00:00",
    }
    path = bot_store.write(tmp_path / "bot.db", [bot_store.row(1)], auth=auth)
    result = import_sqlite(path, Settings.from_env(url=empty_database_url))
    assert result.auth_inserted == 1
    stored = repr(raw(empty_database_url, "SELECT * FROM schwab_auth"))
    assert ACCESS not in stored and "test-current" in stored
    with Database.connect(empty_database_url) as db:
        assert db.schwab_auth.load().access_token == ACCESS
