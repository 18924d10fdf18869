"""Statements of the single row of Schwab tokens (``schwab_auth``, id 1), sealed at rest."""

from __future__ import annotations

from typing import Any

from pypika import PostgreSQLQuery as Query
from pypika import functions as fn

from persistence.queries.build import columns, param
from persistence.tables import SCHWAB_AUTH, SCHWAB_AUTH_COLUMNS, SCHWAB_AUTH_SEALED

__all__ = [
    "COUNT_SCHWAB_AUTH_BY_KEY",
    "INSERT_SCHWAB_AUTH_IF_ABSENT",
    "SELECT_SCHWAB_AUTH",
    "SELECT_SCHWAB_AUTH_FOR_UPDATE",
    "UPDATE_SCHWAB_AUTH_TOKENS",
    "UPSERT_SCHWAB_AUTH",
]

_AUTH_ALL = (*SCHWAB_AUTH_COLUMNS, *SCHWAB_AUTH_SEALED)


def _write_auth() -> Any:
    # the plain columns are written NULL: a saved row is always sealed
    return (
        Query.into(SCHWAB_AUTH)
        .columns(SCHWAB_AUTH.id, *columns(SCHWAB_AUTH, _AUTH_ALL))
        .insert(
            1, *[None if c in ("access_token", "refresh_token") else param(c) for c in _AUTH_ALL]
        )
    )


UPSERT_SCHWAB_AUTH = (
    _write_auth()
    .on_conflict(SCHWAB_AUTH.id)
    .do_update(SCHWAB_AUTH.access_token)
    .do_update(SCHWAB_AUTH.access_token_fetched_at)
    .do_update(SCHWAB_AUTH.refresh_token)
    .do_update(SCHWAB_AUTH.refresh_token_fetched_at)
    .do_update(SCHWAB_AUTH.access_token_sealed)
    .do_update(SCHWAB_AUTH.refresh_token_sealed)
    .do_update(SCHWAB_AUTH.token_key_id)
    .get_sql()
)
# the SQLite import: tokens already stored are kept
INSERT_SCHWAB_AUTH_IF_ABSENT = _write_auth().on_conflict(SCHWAB_AUTH.id).do_nothing().get_sql()
SELECT_SCHWAB_AUTH = (
    Query.from_(SCHWAB_AUTH)
    .select(*columns(SCHWAB_AUTH, _AUTH_ALL))
    .where(SCHWAB_AUTH.id == 1)
    .get_sql()
)
# encrypt, rotate and decrypt: the rows locked until the command commits, so a save that
# races them waits and is not overwritten by the tokens they read
SELECT_SCHWAB_AUTH_FOR_UPDATE = (
    Query.from_(SCHWAB_AUTH)
    .select(SCHWAB_AUTH.id, *columns(SCHWAB_AUTH, _AUTH_ALL))
    .orderby(SCHWAB_AUTH.id)
    .for_update()
    .get_sql()
)
UPDATE_SCHWAB_AUTH_TOKENS = (
    Query.update(SCHWAB_AUTH)
    .set(SCHWAB_AUTH.access_token, param("access_token"))
    .set(SCHWAB_AUTH.refresh_token, param("refresh_token"))
    .set(SCHWAB_AUTH.access_token_sealed, param("access_token_sealed"))
    .set(SCHWAB_AUTH.refresh_token_sealed, param("refresh_token_sealed"))
    .set(SCHWAB_AUTH.token_key_id, param("token_key_id"))
    .where(SCHWAB_AUTH.id == param("id"))
    .get_sql()
)
COUNT_SCHWAB_AUTH_BY_KEY = (
    Query.from_(SCHWAB_AUTH)
    .select(SCHWAB_AUTH.token_key_id, fn.Count("*"))
    .groupby(SCHWAB_AUTH.token_key_id)
    .get_sql()
)
