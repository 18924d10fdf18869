"""The Schwab tokens: what sealing them (AES-256-GCM) adds to save and load.

``sealed`` is the library's ``schwab_auth.save`` / ``load``; ``plain`` runs the same kind of
statement through the same pool and runner with the tokens in the plain columns (the row as
the schema before 0003 held it). The difference is the cost of sealing: target at most 20 µs
per call. ``seal_and_open`` times the cryptography alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from persistence import Database
from persistence.converter import auth_from_row
from persistence.models import SchwabAuth
from persistence.operations import NONE, Query
from persistence.operations import auth as auth_ops
from persistence.tokens import new_key, parse_keyring
from tests.factories import make_auth

KEYS = new_key("bench")
AUTH = make_auth(access_token="A" * 1200, refresh_token="R" * 200)  # Schwab's tokens are long
# the row before 0003: plain columns, nothing sealed
PLAIN_UPSERT = (
    "INSERT INTO schwab_auth (id, access_token, access_token_fetched_at, refresh_token, "
    "refresh_token_fetched_at) VALUES (1, %(access_token)s, %(access_token_fetched_at)s, "
    "%(refresh_token)s, %(refresh_token_fetched_at)s) ON CONFLICT (id) DO UPDATE SET "
    "access_token = EXCLUDED.access_token, access_token_fetched_at = "
    "EXCLUDED.access_token_fetched_at, refresh_token = EXCLUDED.refresh_token, "
    "refresh_token_fetched_at = EXCLUDED.refresh_token_fetched_at, access_token_sealed = NULL, "
    "refresh_token_sealed = NULL, token_key_id = NULL"
)
PLAIN_SELECT = (
    "SELECT access_token, access_token_fetched_at, refresh_token, refresh_token_fetched_at "
    "FROM schwab_auth WHERE id = 1"
)


def _plain(row: Any) -> SchwabAuth:
    return auth_from_row(row, SchwabAuth)


@pytest.fixture(scope="module")
def sealing_db(url: str) -> Iterator[Database]:
    with Database.connect(url, min_size=1, max_size=1, token_keys=KEYS) as database:
        yield database


@pytest.mark.parametrize("variant", ["sealed", "plain"])
def test_save(benchmark: Any, variant: str, sealing_db: Database) -> None:
    """Save the tokens (one upsert)."""
    benchmark.group = "auth_save"
    if variant == "sealed":
        benchmark(sealing_db.schwab_auth.save, AUTH)
    else:
        benchmark(sealing_db._run, Query(PLAIN_UPSERT, _fields(AUTH), fetch=NONE))


@pytest.mark.parametrize("variant", ["sealed", "plain"])
def test_load(benchmark: Any, variant: str, sealing_db: Database) -> None:
    """Load the tokens (one select, and opening them when sealed)."""
    benchmark.group = "auth_load"
    if variant == "sealed":
        sealing_db.schwab_auth.save(AUTH)
        assert benchmark(sealing_db.schwab_auth.load) == AUTH
    else:
        sealing_db._run(Query(PLAIN_UPSERT, _fields(AUTH), fetch=NONE))
        assert benchmark(sealing_db._run, Query(PLAIN_SELECT, decode=_plain)) == AUTH


def _fields(auth: SchwabAuth) -> dict[str, Any]:
    return {
        "access_token": auth.access_token,
        "access_token_fetched_at": auth.access_token_fetched_at,
        "refresh_token": auth.refresh_token,
        "refresh_token_fetched_at": auth.refresh_token_fetched_at,
    }


def test_seal_and_open(benchmark: Any) -> None:
    """Seal both tokens and open them again: the cryptography alone, no database."""
    benchmark.group = "auth_crypto"
    ring = parse_keyring(KEYS)

    def seal_and_open() -> str:
        key_id, access = ring.seal(AUTH.access_token, auth_ops.ACCESS)
        _, refresh = ring.seal(AUTH.refresh_token, auth_ops.REFRESH)
        ring.unseal(key_id, refresh, auth_ops.REFRESH)
        return ring.unseal(key_id, access, auth_ops.ACCESS)

    assert benchmark(seal_and_open) == AUTH.access_token
