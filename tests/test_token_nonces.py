"""Each seal of a Schwab token takes a fresh 96-bit nonce: AES-GCM under one key with a nonce
used twice leaks the XOR of the plaintexts and lets the tag be forged, so no two sealed values
may share one, even for the same token in the same row and column."""

from __future__ import annotations

from typing import Any

import psycopg

from persistence.operations.auth import ACCESS, REFRESH
from persistence.tokens import NONCE_BYTES, parse_keyring
from tests.factories import make_auth
from tests.support import TEST_TOKEN_KEYS

TAG_BYTES = 16  # GCM's tag
TOKEN = "ACCESS-TOKEN-nonce-test-0123456789"


def test_two_seals_of_one_token_differ_and_both_open() -> None:
    keyring = parse_keyring(TEST_TOKEN_KEYS)
    seals = [keyring.seal(TOKEN, ACCESS) for _ in range(3)]
    assert {key_id for key_id, _ in seals} == {"test-current"}
    blobs = [blob for _, blob in seals]
    assert NONCE_BYTES == 12  # 96 bits: GCM's native nonce size
    assert all(len(blob) == NONCE_BYTES + len(TOKEN.encode()) + TAG_BYTES for blob in blobs)
    assert len({blob[:NONCE_BYTES] for blob in blobs}) == 3  # a nonce each
    assert len({blob[NONCE_BYTES:] for blob in blobs}) == 3  # so ciphertexts differ too
    assert [keyring.unseal("test-current", blob, ACCESS) for blob in blobs] == [TOKEN] * 3


def stored(url: str) -> tuple[bytes, bytes]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT access_token_sealed, refresh_token_sealed FROM schwab_auth"
        ).fetchone()
    assert row is not None
    return bytes(row[0]), bytes(row[1])


def test_saved_rows_never_share_a_nonce(db: Any, emptied_url: str) -> None:
    auth = make_auth(access_token=TOKEN, refresh_token=TOKEN)  # the same text in both columns
    db.schwab_auth.save(auth)
    first = stored(emptied_url)
    assert db.schwab_auth.load() == auth
    db.schwab_auth.save(auth)  # the same tokens saved again
    second = stored(emptied_url)
    assert db.schwab_auth.load() == auth
    for blob in (*first, *second):
        assert len(blob) == NONCE_BYTES + len(TOKEN.encode()) + TAG_BYTES
    nonces = {blob[:NONCE_BYTES] for blob in (*first, *second)}
    assert len(nonces) == 4, "a nonce was used twice"
    assert first != second
    keyring = parse_keyring(TEST_TOKEN_KEYS)
    for access, refresh in (first, second):
        assert keyring.unseal("test-current", access, ACCESS) == TOKEN
        assert keyring.unseal("test-current", refresh, REFRESH) == TOKEN
