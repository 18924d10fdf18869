"""The runners' savepoint steps (``Query(..., savepoint=True)`` in ``Steps``), on both APIs.

A constraint violation of such a step is undone alone and thrown into its generator, which may
catch it and go on: inside a transaction under a savepoint, and with no transaction open as a
statement of its own (no BEGIN and COMMIT around it). Any other failure leaves the generator
and reaches the database, which knows what it means for the connection.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from persistence.errors import Conflict, PersistenceError
from persistence.operations import NONE, Query, Step, Steps

# a table with a key that no other test of the database fixture's writes
_NAME = "test_steps"
_INSERT = "INSERT INTO checkpoints (name, position) VALUES (%(name)s, %(position)s)"
_COUNT = Query("SELECT count(*) FROM checkpoints WHERE name = %(name)s", {"name": _NAME})


@pytest.fixture(autouse=True)
def _no_row(db: Any) -> None:
    db._run(Query("DELETE FROM checkpoints WHERE name = %(name)s", {"name": _NAME}, fetch=NONE))


def _insert_twice(catch: type[Exception]) -> Generator[Step, Any, tuple[str, int]]:
    yield Query(_INSERT, {"name": _NAME, "position": 1}, fetch=NONE, savepoint=True)
    try:
        yield Query(_INSERT, {"name": _NAME, "position": 2}, fetch=NONE, savepoint=True)
    except catch as exc:
        (stored,) = yield _COUNT  # the transaction (or connection) goes on
        return type(exc).__name__, stored
    return "inserted", 0


@pytest.mark.parametrize("atomic", [False, True], ids=["alone", "in_a_transaction"])
def test_a_constraint_violation_is_thrown_into_the_generator_which_goes_on(
    db: Any, atomic: bool
) -> None:
    outcome = db._run(Steps(_insert_twice(Conflict), atomic=atomic))
    assert outcome == ("Conflict", 1)
    assert db._run(_COUNT) == (1,)


def _divide(by: int) -> Generator[Step, Any, str]:
    try:
        yield Query("SELECT 1 / %(by)s", {"by": by}, savepoint=True)
    except PersistenceError:
        return "caught"
    return "done"


@pytest.mark.parametrize("atomic", [False, True], ids=["alone", "in_a_transaction"])
def test_any_other_failure_leaves_the_generator(db: Any, atomic: bool) -> None:
    assert db._run(Steps(_divide(1), atomic=atomic)) == "done"
    with pytest.raises(PersistenceError, match="division by zero"):
        db._run(Steps(_divide(0), atomic=atomic))
    assert db._run(_COUNT) == (0,)  # the connection went back usable
