"""The single row of Schwab tokens."""

from __future__ import annotations

from typing import Any

from persistence import queries
from persistence.converter import auth_from_row, auth_params
from persistence.errors import ValidationError
from persistence.models import SchwabAuth
from persistence.operations import NONE, Query


def _auth(row: Any) -> SchwabAuth | None:
    return None if row is None else auth_from_row(row, SchwabAuth)


def save(auth: SchwabAuth) -> Query[None]:
    """Store ``auth``, replacing the tokens saved before."""
    if not isinstance(auth, SchwabAuth):
        raise ValidationError(f"save takes a SchwabAuth, not {type(auth).__name__}")
    return Query(queries.UPSERT_SCHWAB_AUTH, auth_params(auth), fetch=NONE)


def load() -> Query[SchwabAuth | None]:
    """The saved tokens, or None before the first save."""
    return Query(queries.SELECT_SCHWAB_AUTH, decode=_auth)
