"""The single row of Schwab tokens, sealed at rest with the token keyring (persistence.tokens).

``save`` always seals, under the current key. ``load`` opens a sealed row with whichever key of
the ring sealed it. A row left in plain text by the migration (before ``encrypt``) still loads,
with a warning logged once per process, so the bot keeps working during the switch; the next
``save`` seals it.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from functools import partial
from typing import Any

from persistence.config import python_m
from persistence.converter import auth_from_row
from persistence.errors import ConfigurationError, ValidationError
from persistence.models import SchwabAuth
from persistence.operations import ALL, COUNT, NONE, Query, Step, Steps
from persistence.queries import auth as sql
from persistence.tokens import NO_KEY, Keyring

logger = logging.getLogger("persistence.tokens")

# associated data: a ciphertext opens only in the table, row and column it was sealed for
_ROW = 1
ACCESS = f"persistence/schwab_auth/{_ROW}/access_token".encode()
REFRESH = f"persistence/schwab_auth/{_ROW}/refresh_token".encode()
PLAIN = "plain"  # how status() names rows that are not sealed
_warned_plain: list[bool] = []


def _require(keyring: Keyring | None) -> Keyring:
    if keyring is None:
        raise ConfigurationError(NO_KEY)
    return keyring


def sealed_params(auth: SchwabAuth, keyring: Keyring | None) -> dict[str, Any]:
    """The row's parameters with both tokens sealed under the current key."""
    if not isinstance(auth, SchwabAuth):
        raise ValidationError(f"save takes a SchwabAuth, not {type(auth).__name__}")
    ring = _require(keyring)
    key_id, access = ring.seal(auth.access_token, ACCESS)
    _, refresh = ring.seal(auth.refresh_token, REFRESH)
    return {
        "access_token_fetched_at": auth.access_token_fetched_at,
        "refresh_token_fetched_at": auth.refresh_token_fetched_at,
        "access_token_sealed": access,
        "refresh_token_sealed": refresh,
        "token_key_id": key_id,
    }


def _tokens(row: Any, keyring: Keyring | None) -> tuple[str, str]:
    """(access, refresh) of a row (plain columns, then sealed ones and the key id)."""
    access, _, refresh, _, access_sealed, refresh_sealed, key_id = row
    if key_id is None:
        return access, refresh
    if keyring is None:
        raise ConfigurationError(
            f"the stored Schwab tokens are sealed under key id {key_id!r}; {NO_KEY}"
        )
    return keyring.unseal(key_id, access_sealed, ACCESS), keyring.unseal(
        key_id, refresh_sealed, REFRESH
    )


def _opened(keyring: Keyring | None, row: Any) -> SchwabAuth | None:
    if row is None:
        return None
    access, refresh = _tokens(row, keyring)
    if row[6] is None and not _warned_plain:
        _warned_plain.append(True)
        logger.warning(
            "schwab_auth holds the tokens in plain text: run `%s` (the next save seals them too)",
            python_m("persistence.tokens", "encrypt"),
        )
    return auth_from_row((access, row[1], refresh, row[3]))


def save(keyring: Keyring | None, auth: SchwabAuth) -> Query[None]:
    """Store ``auth``, sealed, replacing the tokens saved before."""
    return Query(sql.UPSERT_SCHWAB_AUTH, sealed_params(auth, keyring), fetch=NONE)


def insert_if_absent(keyring: Keyring | None, auth: SchwabAuth) -> Query[int]:
    """Store ``auth``, sealed, unless tokens are stored already; 1 if stored, else 0."""
    return Query(
        sql.INSERT_SCHWAB_AUTH_IF_ABSENT,
        sealed_params(auth, keyring),
        fetch=COUNT,
        stored=_none_inserted,
    )


def _none_inserted(inserted: int) -> bool:
    return inserted == 0


def load(keyring: Keyring | None) -> Query[SchwabAuth | None]:
    """The saved tokens, or None before the first save."""
    # binary: the sealed bytea arrives as bytes instead of hex text (measured: 6 µs of ~20)
    return Query(sql.SELECT_SCHWAB_AUTH, decode=partial(_opened, keyring), binary=True)


def _by_key(rows: Any) -> dict[str, int]:
    return {PLAIN if key_id is None else key_id: int(count) for key_id, count in rows}


def status() -> Query[dict[str, int]]:
    """How many rows are sealed under each key id, and how many are plain ("plain")."""
    return Query(sql.COUNT_SCHWAB_AUTH_BY_KEY, fetch=ALL, decode=_by_key)


def encrypt(keyring: Keyring | None) -> Steps[dict[str, int]]:
    """Seal the plain rows under the current key; returns what it sealed, by former key id."""
    return Steps(_reseal(_require(keyring), lambda key_id: key_id is None))


def rotate(keyring: Keyring | None) -> Steps[dict[str, int]]:
    """Re-seal every row under the current key (plain ones too); returns the rows by former
    key id. Afterwards no row needs an older key."""
    return Steps(_reseal(_require(keyring), lambda key_id: True))


def decrypt(keyring: Keyring | None) -> Steps[dict[str, int]]:
    """Store the tokens in plain text again (before migrating down past 0003)."""
    return Steps(_reseal(keyring, lambda key_id: key_id is not None, seal=False))


def _reseal(
    keyring: Keyring | None, chosen: Any, *, seal: bool = True
) -> Generator[Step, Any, dict[str, int]]:
    rows = yield Query(sql.SELECT_SCHWAB_AUTH_FOR_UPDATE, fetch=ALL)
    done: dict[str, int] = {}
    for row in rows:
        key_id = row[7]
        if not chosen(key_id):
            continue
        access, refresh = _tokens(row[1:], keyring)
        params: dict[str, Any] = {"id": row[0]}
        if seal:
            assert keyring is not None
            new_id, params["access_token_sealed"] = keyring.seal(access, ACCESS)
            _, params["refresh_token_sealed"] = keyring.seal(refresh, REFRESH)
            params.update(access_token=None, refresh_token=None, token_key_id=new_id)
        else:
            params.update(
                access_token=access,
                refresh_token=refresh,
                access_token_sealed=None,
                refresh_token_sealed=None,
                token_key_id=None,
            )
        yield Query(sql.UPDATE_SCHWAB_AUTH_TOKENS, params, fetch=NONE)
        former = PLAIN if key_id is None else key_id
        done[former] = done.get(former, 0) + 1
    return done
