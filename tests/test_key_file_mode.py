"""A token key file that group or others can read or write is refused, as ssh refuses such keys."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from persistence.errors import ConfigurationError
from persistence.tokens import development_keyring
from tests.support import TEST_TOKEN_KEYS, environment_without

KEY_SECRETS = ("A" * 43, "B" * 43)


def key_file(folder: Path, mode: int) -> Path:
    path = folder / "token-keys"
    path.write_text(TEST_TOKEN_KEYS + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o620, 0o602, 0o660, 0o700 | 0o007])
def test_a_key_file_others_can_reach_is_refused_at_connect(
    open_database: Callable[..., Any],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: int,
) -> None:
    monkeypatch.delenv("PERSISTENCE_TOKEN_KEYS")  # it would win over the file
    path = key_file(tmp_path, mode)
    with (
        pytest.raises(ConfigurationError) as caught,
        open_database(database_url, token_keys_file=path),
    ):
        pass
    message = str(caught.value)
    assert "PERSISTENCE_TOKEN_KEYS_FILE" in message and str(path) in message
    assert f"chmod 600 {path}" in message and f"mode {mode:04o}" in message
    assert not any(secret in message for secret in KEY_SECRETS)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_key_file_of_the_owner_only_is_used(
    open_database: Callable[..., Any],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: int,
) -> None:
    monkeypatch.delenv("PERSISTENCE_TOKEN_KEYS")
    with open_database(database_url, token_keys_file=key_file(tmp_path, mode)) as db:
        assert db.token_keyring.ids == ("test-current", "test-old")


def test_a_symlinked_key_file_is_judged_by_its_target(
    open_database: Callable[..., Any],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Secrets are often mounted as symlinks (mode 0777 themselves): the file's mode counts."""
    monkeypatch.delenv("PERSISTENCE_TOKEN_KEYS")
    target = key_file(tmp_path, 0o644)
    link = tmp_path / "mounted"
    link.symlink_to(target)
    with (
        pytest.raises(ConfigurationError, match="accessible by group or others"),
        open_database(database_url, token_keys_file=link),
    ):
        pass
    target.chmod(0o600)
    with open_database(database_url, token_keys_file=link) as db:
        assert db.token_keyring is not None


def test_the_tokens_cli_refuses_an_open_key_file(database_url: str, tmp_path: Path) -> None:
    path = key_file(tmp_path, 0o644)
    env = environment_without("DATABASE_URL", "PERSISTENCE_TOKEN_KEYS")
    env["PERSISTENCE_TOKEN_KEYS_FILE"] = str(path)
    result = subprocess.run(
        [sys.executable, "-m", "persistence.tokens", "status", "--database-url", database_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"chmod 600 {path}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert not any(secret in result.stderr + result.stdout for secret in KEY_SECRETS)


def test_a_development_key_file_opened_up_is_refused(tmp_path: Path) -> None:
    embedded = tmp_path / ".postgres-data" / "embedded"
    assert development_keyring(embedded).ids == ("dev",)  # made, 0600, when first used
    path = tmp_path / ".postgres-data" / "embedded.token-keys"
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match=r"chmod 600 .*embedded\.token-keys"):
        development_keyring(embedded)
