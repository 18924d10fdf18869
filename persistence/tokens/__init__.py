"""The Schwab tokens, sealed at rest with AES-256-GCM (``cryptography``'s AESGCM).

Keys come as a keyring, ``id:base64key[,id:base64key...]``, the first one current: from
``PERSISTENCE_TOKEN_KEYS``, or from the file named by ``PERSISTENCE_TOKEN_KEYS_FILE`` (for
secrets mounted as files). Without either, the embedded development server gets a key file
generated beside its data (mode 0600); with ``DATABASE_URL`` set no key is ever generated, and
saving tokens refuses until one is configured.

Each token is sealed with a fresh 96-bit nonce under the current key. The stored value is
nonce || ciphertext || tag, the key's id is stored beside it, and the associated data names the
table, row and column, so that swapping the two ciphertexts, or copying one to another row,
fails to decrypt. Keys and tokens appear in no log line, exception, ``repr`` or report.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
import stat
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from persistence.config import ENV_VARS, Settings, python_m
from persistence.errors import ConfigurationError, TokenDecryptionFailed, ValidationError

__all__ = ["Keyring", "development_keyring", "keyring_for", "new_key", "parse_keyring"]

logger = logging.getLogger("persistence.tokens")

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, GCM's native nonce size
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
KEYS_VAR = ENV_VARS["token_keys"]
KEYS_FILE_VAR = ENV_VARS["token_keys_file"]
DEVELOPMENT_KEY_ID = "dev"


class Keyring:
    """Token keys by id; ``current`` seals, any of them opens. ``repr`` shows ids only."""

    __slots__ = ("_loaded", "_make", "current")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        self._loaded: dict[str, AESGCM] | None = {key_id: AESGCM(key) for key_id, key in keys}
        self._make: Callable[[], Keyring] | None = None
        self.current = keys[0][0]

    @classmethod
    def deferred(cls, current: str, make: Callable[[], Keyring]) -> Keyring:
        """A keyring whose keys ``make`` gives when they are first needed (the development key:
        its file is written, and that logged, only if tokens are ever sealed or opened)."""
        ring = cls.__new__(cls)
        ring._loaded, ring._make, ring.current = None, make, current
        return ring

    @property
    def _ciphers(self) -> dict[str, AESGCM]:
        if self._loaded is None:
            assert self._make is not None
            made = self._make()
            self._loaded, self.current = made._ciphers, made.current
        return self._loaded

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def __repr__(self) -> str:
        ids = "not made yet" if self._loaded is None else list(self._loaded)
        return f"Keyring(current={self.current!r}, ids={ids!r})"

    def seal(self, plaintext: str, context: bytes) -> tuple[str, bytes]:
        """(key id, nonce || ciphertext || tag) of ``plaintext`` under the current key."""
        encoded = _utf8(plaintext)
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, encoded, context)
        return self.current, nonce + sealed

    def unseal(self, key_id: str, blob: bytes, context: bytes) -> str:
        """The token sealed as ``blob`` under ``key_id`` for ``context``; never garbage."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise TokenDecryptionFailed(
                f"the stored tokens are sealed under key id {key_id!r}, which is not in the "
                f"keyring (ids: {', '.join(self._ciphers)}): put that key back in {KEYS_VAR} "
                "(any position after the first), or save fresh tokens"
            )
        try:
            return cipher.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context).decode()
        except InvalidTag:
            raise TokenDecryptionFailed(
                f"a stored token sealed under key id {key_id!r} did not decrypt: the key with "
                f"that id in {KEYS_VAR} is not the one that sealed it, or the stored bytes were "
                "changed, or moved to another row or column. Check the key for that id; if the "
                "data was tampered with, save fresh tokens from Schwab"
            ) from None


def _utf8(token: str) -> bytes:
    """``token`` as UTF-8; a ValidationError that shows no part of it when it cannot be."""
    try:
        return token.encode()
    except UnicodeEncodeError:
        pass  # raised below, outside the handler: the UnicodeEncodeError's repr holds the token
    raise ValidationError(
        "a Schwab token holds a lone surrogate, which UTF-8 cannot encode (value not shown)"
    )


def parse_keyring(text: str, source: str = KEYS_VAR) -> Keyring:
    """A keyring from ``id:base64key[,...]``; ConfigurationError naming ``source``, never a key."""
    entries = [entry.strip() for entry in text.replace("\n", ",").split(",") if entry.strip()]
    if not entries:
        raise ConfigurationError(f"{source} holds no key: give id:base64key[,id:base64key...]")
    keys: list[tuple[str, bytes]] = []
    for number, entry in enumerate(entries, 1):
        key_id, colon, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not colon or not _KEY_ID.fullmatch(key_id):
            raise ConfigurationError(
                f"entry {number} of {source} must be id:base64key, the id of 1 to 64 letters, "
                "digits, '_', '.' or '-' (value not shown)"
            )
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(
                f"the key {key_id!r} in {source} is not valid base64 (value not shown)"
            ) from None
        if len(key) != KEY_BYTES:
            raise ConfigurationError(
                f"the key {key_id!r} in {source} is {len(key)} bytes; AES-256 needs "
                f"{KEY_BYTES}: make one with `{python_m('persistence.tokens', 'new-key')}`"
            )
        if any(key_id == known for known, _ in keys):
            raise ConfigurationError(f"the key id {key_id!r} appears twice in {source}")
        keys.append((key_id, key))
    return Keyring(keys)


def new_key(key_id: str | None = None) -> str:
    """A fresh ``id:base64key`` entry (32 random bytes), for the keyring."""
    key_id = key_id or datetime.now(UTC).strftime("k%Y%m%d")
    if not _KEY_ID.fullmatch(key_id):
        raise ConfigurationError(f"key id {key_id!r}: use 1 to 64 letters, digits, '_', '.' or '-'")
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


def development_keyring(embedded_dir: Path) -> Keyring:
    """The embedded server's development key, generated once beside its data (mode 0600) when
    tokens are first sealed or opened: a bot that never stores tokens never gets one."""
    path = embedded_dir.with_name(embedded_dir.name + ".token-keys")
    if path.exists():
        return _read_keys_file(path, f"the development key file {path}")
    return Keyring.deferred(DEVELOPMENT_KEY_ID, lambda: _made_development_keyring(path))


def _made_development_keyring(path: Path) -> Keyring:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigurationError(
            f"could not create the development token key file {path}: {exc.strerror}; set "
            f"{KEYS_VAR} instead"
        ) from None
    else:
        with os.fdopen(descriptor, "w") as file:
            file.write(new_key(DEVELOPMENT_KEY_ID) + "\n")
        logger.warning(
            "generated a development key for the Schwab tokens in %s (embedded server only; "
            "never used with DATABASE_URL, where %s must be set)",
            path,
            KEYS_VAR,
        )
    return _read_keys_file(path, f"the development key file {path}")


def _read_keys_file(path: Path, source: str) -> Keyring:
    try:
        mode = path.stat().st_mode  # of the file a symlink (a mounted secret) points at
        # as ssh does with a private key: keys that other users could read (or replace) are
        # refused, before they are read
        if os.name == "posix" and mode & 0o077:
            raise ConfigurationError(
                f"{source} is accessible by group or others (mode {stat.S_IMODE(mode):04o}): "
                f"the token keys must be readable by the bot's user only; run `chmod 600 {path}`"
            )
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"{source} cannot be read: {exc.strerror}") from None
    return parse_keyring(text, source)


def keyring_for(settings: Settings) -> Keyring | None:
    """The configured keyring; the development one on the embedded server; else None."""
    if settings.token_keys:
        return parse_keyring(settings.token_keys, KEYS_VAR)
    if settings.token_keys_file is not None:
        return _read_keys_file(
            settings.token_keys_file, f"{KEYS_FILE_VAR} ({settings.token_keys_file})"
        )
    if settings.url is None and settings.embedded != "never":
        return development_keyring(settings.embedded_dir)
    return None


NO_KEY = (
    f"no key to seal the Schwab tokens with: set {KEYS_VAR} (or {KEYS_FILE_VAR}); "
    f"`{python_m('persistence.tokens', 'new-key')}` makes one (docs/production.md)"
)
